"""The command line. Thin: parses, calls the library, prints. A TailorError becomes one line on
stderr and exit code 2, never a traceback. Commands live in `tailor.commands`, one module per
area, and are registered here by name."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from .commands import bench, curate, data, eval, export, index, label, ladder, serve, track, train, tune, ui
from .errors import TailorError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Tailor: measure which adaptation of an open LLM is worth it on your task, and build it.")
err = Console(stderr=True)

COMMANDS = {
    "demo": ladder.demo, "run": ladder.run_, "advise": ladder.advise,
    "tasks": data.tasks, "check": data.check, "curate": curate.curate, "debug": data.debug, "label": label.label,
    "index": index.index,
    "eval": eval.eval_, "train": train.train, "export": export.export, "inspect-prompt": train.inspect_prompt,
    "bench": bench.bench, "serve": serve.serve, "predict": serve.predict, "tune": tune.tune,
    "track": track.track, "ui": ui.ui,
}
for name, command in COMMANDS.items():
    app.command(name)(command)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # standalone_mode=False: a usage error (a number that is not one, an unknown option, a missing
        # argument) comes back here and is one line like every other error, not click's boxed usage
        code = app(standalone_mode=False)
    except TailorError as e:
        # markup=False: a message quoting user data such as "[x]" must print as it is.
        err.print(f"error: {e}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.TyperException as e:   # click's errors, as typer (which carries its own click) raises them
        if e.exit_code != 2 or type(e).__name__ == "NoArgsIsHelpError":   # `tailor` alone shows the help
            e.show()
            sys.exit(e.exit_code)
        err.print(f"error: {' '.join(e.format_message().split())}", style="bold red", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""The command line. Thin: parses, calls the library, prints. A TailorError becomes one line on
stderr and exit code 2, never a traceback. Commands live in `tailor.commands`, one module per
area, and are registered here by name."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from .commands import bench, curate, data, eval, index, label, ladder, serve, track, train, tune
from .errors import TailorError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Tailor: measure which adaptation of an open LLM is worth it on your task, and build it.")
err = Console(stderr=True)

COMMANDS = {
    "demo": ladder.demo, "run": ladder.run_, "advise": ladder.advise,
    "tasks": data.tasks, "check": data.check, "curate": curate.curate, "debug": data.debug, "label": label.label,
    "index": index.index,
    "eval": eval.eval_, "train": train.train, "export": train.export, "inspect-prompt": train.inspect_prompt,
    "bench": bench.bench, "serve": serve.serve, "predict": serve.predict, "tune": tune.tune,
    "track": track.track,
}
for name, command in COMMANDS.items():
    app.command(name)(command)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except TailorError as e:
        # markup=False: a message quoting user data such as "[x]" must print as it is.
        err.print(f"error: {e}", style="bold red", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

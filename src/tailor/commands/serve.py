"""The use-the-winner area: `tailor serve` (an OpenAI-compatible server of one base and its arms)
and `tailor predict` (batch prediction over a file, resumable)."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import TailorError
from . import out
from .numbers import COUNT, PORT


def serve(
    base: str = typer.Option("smollm2-135m", help="the base model: a bundled name, a local folder or a hub id"),
    adapter: list[str] = typer.Option([], help="NAME=ARM: serve the arm folder ARM (a `tailor train`/`tailor eval` "
                                               "run or a ladder's RUN/arms/NAME) as model NAME; repeat for more"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (anything but loopback needs --api-key)"),
    port: int = typer.Option(8000, callback=PORT),
    api_key: Optional[str] = typer.Option(None, envvar="TAILOR_API_KEY", help="require Authorization: Bearer KEY"),
    batch_size: int = typer.Option(16, callback=COUNT, help="requests decoded together"),
    max_queue: int = typer.Option(256, callback=COUNT, help="requests waiting or running before the server answers 429"),
    max_tokens: int = typer.Option(2048, callback=COUNT, help="the most tokens one choice may generate (more is a 400)"),
    mix_adapters: bool = typer.Option(True, help="rows of different adapters share each forward (off: one adapter "
                                                 "per batch, switching between them; for comparison)"),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("auto"),
) -> None:
    """Serve the base and its arms behind the OpenAI API (chat completions, completions, models)."""
    from ..models import load_base
    from ..serve.run import check_bind
    from ..serve.run import serve as run
    check_bind(host, api_key)
    arms = {}
    for spec in adapter:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise TailorError(f"--adapter {spec!r}: expected NAME=ARM_FOLDER")
        if name in arms:   # the later one would replace the earlier without a word
            raise TailorError(f"--adapter {spec!r}: the model name {name!r} is given twice")
        arms[name] = path
    _read_arms(arms.values())
    loaded = load_base(base, dtype, device)
    out.print(f"serving {loaded.name}" + (f" and {', '.join(arms)}" if arms else "") +
              f" at http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    run(loaded, arms, host, port, api_key, max_tokens, batch_size=batch_size, max_queue=max_queue,
        mix_adapters=mix_adapters)


def _read_arms(paths) -> None:
    """Each arm's recipe, pool and options read and checked before a model loads: an edited or
    corrupted arm folder is one line naming its file and field, not a failure after minutes of loading."""
    from ..methods.base import arm_options
    from ..recipe import find_arm, read_recipe
    for path in paths:
        folder = find_arm(path)
        arm_options(read_recipe(folder)[0], folder)


def predict(
    arm: str = typer.Argument(..., help="an arm folder: a `tailor train`/`tailor eval` run or a ladder's RUN/arms/NAME"),
    input: str = typer.Option(..., "--input", help="a task file (targets optional) or an OpenAI Batch JSONL file"),
    output: str = typer.Option(..., "--output", help="the predictions, one JSON line per row, in input order"),
    errors: Optional[str] = typer.Option(None, help="per-row failures (default: OUTPUT's name + .errors.jsonl)"),
    model: Optional[str] = typer.Option(None, help="base model (default: the one the arm was fitted on)"),
    batch_size: int = typer.Option(16, callback=COUNT, help="rows per engine batch (and per journal flush)"),
    max_new_tokens: int = typer.Option(64, callback=COUNT, help="generate arms on task rows: tokens per answer"),
    cache: bool = typer.Option(True, help="reuse engine results from earlier runs"),
    dtype: str = typer.Option("auto"),
    device: str = typer.Option("auto"),
    runs_dir: str = typer.Option("runs"),
    processes: int = typer.Option(1, callback=COUNT,
                                  help="predict in N processes on this machine (torchrun over loopback), the rows "
                                       "dealt out between them; several machines: torchrun -m tailor.cli predict"),
) -> None:
    """Predict every row of a file with an arm, as the ladder measured it; killed and rerun, it
    resumes where it stopped (no row computed twice, none lost)."""
    from ..predict import run_predict
    if processes != 1:
        from ..train.launch import launch_local
        args = ["predict", arm, "--input", input, "--output", output, "--batch-size", str(batch_size),
                "--max-new-tokens", str(max_new_tokens), "--dtype", dtype, "--device", device, "--runs-dir", runs_dir,
                "--cache" if cache else "--no-cache", *(["--errors", errors] if errors else []),
                *(["--model", model] if model else [])]
        code = launch_local(args, processes)
        if code:
            raise typer.Exit(code)
        return
    s = run_predict(arm, input, output, errors, model=model, dtype=dtype, device=device, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, cache=cache, runs_dir=runs_dir)
    if s is None:   # a rank other than 0 of a launched run: rank 0 merges and prints
        return
    out.print(f"{s['written']:,} rows written to {s['output']}" + (f", {s['failed']:,} failed ({s['errors']})"
                                                                  if s["failed"] else "") +
              f"; computed {s['computed']:,} now, {s['from_journal']:,} resumed from an earlier run "
              f"({s['rows_per_s'] or 0:,.1f} rows/s, {s['tokens_per_s'] or 0:,.0f} tokens/s, prompt + completion)",
              highlight=False)
    prompt = s["prompt_tokens"]
    if prompt["reused"]:
        out.print(f"{prompt['reused'] / (prompt['reused'] + prompt['prefilled']):.0%} of the prompt tokens decoded reused "
                  "the keys and values of a shared start (instruction, template, fixed examples) instead of "
                  "prefilling them again", highlight=False)
    if s.get("metrics"):
        out.print("metrics on the rows with a target: " + ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in s["metrics"].items()), highlight=False)
    out.print(f"run directory: {s['run_dir']}")

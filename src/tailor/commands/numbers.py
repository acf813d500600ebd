"""Numbers on the command line, checked while it is read (typer callbacks run before the command
does any work): a count that is zero or negative, a share outside 0..1, a port outside 1..65535,
nan or inf anywhere is one line naming the option and exit code 2, as the CLI prints a TailorError.
The line is printed here and the command left with typer.Exit(2), so that an app invoked without
`tailor.cli.main` around it (typer's CliRunner, an embedding program) gets the same line and code.
The ranges read as in `schema.check_range`: "[1," at least 1, "(0,1]" above 0 and at most 1."""

from __future__ import annotations

import math
from typing import Callable

import typer
from rich.console import Console

from ..schema import check_range


def refuse(message: str):
    """`error: MESSAGE` on stderr, as `tailor.cli.main` prints a TailorError, and exit code 2."""
    Console(stderr=True).print(f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def bounded(bounds: str, unit: str = "") -> Callable:
    """A typer callback refusing a value outside `bounds` (None, an option left out, passes);
    `unit` follows the bound in the message ("expected at least 1 test row")."""
    def check(param: typer.CallbackParam, value):
        if value is None:
            return value
        name = max(param.opts, key=len) if param.opts else param.name
        if isinstance(value, float) and not math.isfinite(value):
            refuse(f"{name} {value}: expected a finite number")
        try:
            return check_range(value, bounds)
        except ValueError as e:
            refuse(f"{name} {value}: expected {e}{' ' + unit if unit else ''}")
    return check


def split_size(param: typer.CallbackParam, value: float | None):
    """--test / --dev: a share of the rows below 1, or a whole number of rows from 1 on."""
    value = bounded("[0,")(param, value)
    if value is not None and value >= 1 and value != int(value):
        name = max(param.opts, key=len)
        refuse(f"{name} {value}: expected a share below 1 (0.1) or a whole number of rows (200)")
    return value


COUNT = bounded("[1,")          # rows, tokens, batch sizes, processes, workers
TEST_ROWS = bounded("[1,", "test row")
COUNT0 = bounded("[0,")         # where 0 means none (or all, as the option says)
SHARE = bounded("[0,1]")        # probabilities and confidences
POSITIVE_SHARE = bounded("(0,1]")
COSINE = bounded("[-1,1]")
NONNEGATIVE = bounded("[0,")    # a float such as a stop limit
PORT = bounded("[1,65535]")
SEED = bounded("[0,4294967295]")   # as settings files take it (schema.Seed)

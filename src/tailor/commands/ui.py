"""`tailor ui [RUNS_DIR]`: the local dashboard over a runs folder (tailor.ui)."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import TailorError
from . import out
from .numbers import PORT

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ui(
    runs_dir: str = typer.Argument("runs", help="the runs folder (tailor run/train/eval write under runs/ by default)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (anything but loopback needs --api-key)"),
    port: int = typer.Option(8765, callback=PORT),
    api_key: Optional[str] = typer.Option(None, envvar="TAILOR_UI_KEY", help="require this key (open /?key=KEY once)"),
) -> None:
    """A local web dashboard: runs, a running ladder live, reports, predictions, runs of one task side by side."""
    from pathlib import Path
    if host not in LOOPBACK and not api_key:
        raise TailorError(f"refusing to show {runs_dir} on {host} without a key: anyone who can reach it would read "
                          "your data and predictions; pass --api-key KEY, or bind to 127.0.0.1")
    if not Path(runs_dir).is_dir():
        raise TailorError(f"{runs_dir}: no such runs folder")
    import uvicorn

    from ..ui.app import create_app
    out.print(f"Tailor dashboard over {runs_dir} at http://{host}:{port}/" + (" (key required)" if api_key else ""))
    uvicorn.run(create_app(runs_dir, api_key), host=host, port=port, log_level="warning")

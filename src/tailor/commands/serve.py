"""The use-the-winner area: `tailor serve` (an OpenAI-compatible server of one base and its arms)
and `tailor predict` (batch prediction over a file, resumable)."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import TailorError
from . import out


def serve(
    base: str = typer.Option("smollm2-135m", help="the base model: a bundled name, a local folder or a hub id"),
    adapter: list[str] = typer.Option([], help="NAME=ARM: serve the arm folder ARM (a `tailor train`/`tailor eval` "
                                               "run or a ladder's RUN/arms/NAME) as model NAME; repeat for more"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (anything but loopback needs --api-key)"),
    port: int = typer.Option(8000),
    api_key: Optional[str] = typer.Option(None, envvar="TAILOR_API_KEY", help="require Authorization: Bearer KEY"),
    batch_size: int = typer.Option(16, help="requests decoded together"),
    max_queue: int = typer.Option(256, help="requests waiting or running before the server answers 429"),
    max_tokens: int = typer.Option(2048, help="the most tokens one choice may generate (more is a 400)"),
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
        arms[name] = path
    loaded = load_base(base, dtype, device)
    out.print(f"serving {loaded.name}" + (f" and {', '.join(arms)}" if arms else "") +
              f" at http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
    run(loaded, arms, host, port, api_key, batch_size, max_queue, max_tokens)

"""Starting the server: load the base and the arms, start the scheduler, run uvicorn. Binds to
loopback unless told otherwise, and refuses any other address without an API key."""

from __future__ import annotations

import logging

from ..errors import TailorError
from .app import LOOPBACK, create_app
from .arms import load_arms
from .scheduler import Scheduler

log = logging.getLogger("tailor")


def check_bind(host: str, api_key: str | None) -> None:
    if host not in LOOPBACK and not api_key:
        raise TailorError(f"refusing to listen on {host} without an API key: anyone who can reach it could use the "
                          "model; pass --api-key KEY (clients send Authorization: Bearer KEY), or bind to 127.0.0.1")


def build(base, arms: dict, api_key: str | None = None, max_tokens: int = 2048, **scheduling):
    """(app, scheduler) for `base` and `arms` (name -> arm folder); the scheduler is started.
    `scheduling`: Scheduler's batch_size, max_queue, mix_adapters."""
    served = load_arms(base, arms)
    engines = list({id(a.engine): a.engine for a in served.values()}.values())
    scheduler = Scheduler(engines, **scheduling).start()
    return create_app(served, scheduler, api_key, max_tokens=max_tokens), scheduler


def serve(base, arms: dict, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_tokens: int = 2048, **scheduling) -> None:
    import uvicorn
    check_bind(host, api_key)
    app, scheduler = build(base, arms, api_key, max_tokens, **scheduling)
    log.info("serving %s on http://%s:%d/v1", ", ".join(["the base"] + list(arms)), host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        scheduler.stop()

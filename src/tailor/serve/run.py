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


def check_settings(batch_size: int = 16, max_queue: int = 256, max_tokens: int = 2048, port: int = 8000) -> None:
    """The server's numbers, checked before the model loads: a batch of 0 rows would hang every
    request, a queue of 0 refuse all of them, and a port outside 0-65535 fail only after loading."""
    for name, value, low in (("batch-size", batch_size, 1), ("max-queue", max_queue, 1), ("max-tokens", max_tokens, 1),
                             ("port", port, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TailorError(f"--{name} is {value!r}; it must be a whole number, at least {low}")
    if port > 65535:
        raise TailorError(f"--port is {port}; ports go up to 65535")


def build(base, arms: dict, api_key: str | None = None, max_tokens: int = 2048, **scheduling):
    """(app, scheduler) for `base` and `arms` (name -> arm folder); the scheduler is started.
    `scheduling`: Scheduler's batch_size, max_queue, mix_adapters."""
    check_settings(scheduling.get("batch_size", 16), scheduling.get("max_queue", 256), max_tokens)
    served = load_arms(base, arms)
    engines = list({id(a.engine): a.engine for a in served.values()}.values())
    scheduler = Scheduler(engines, **scheduling).start()
    return create_app(served, scheduler, api_key, max_tokens=max_tokens), scheduler


def serve(base, arms: dict, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_tokens: int = 2048, **scheduling) -> None:
    import uvicorn
    check_bind(host, api_key)
    check_settings(scheduling.get("batch_size", 16), scheduling.get("max_queue", 256), max_tokens, port)
    app, scheduler = build(base, arms, api_key, max_tokens, **scheduling)
    log.info("serving %s on http://%s:%d/v1", ", ".join(["the base"] + list(arms)), host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        scheduler.stop()

"""`tailor` commands for the train area (registered on tailor.cli.app)."""

from ..cli import app, err, out  # noqa: F401

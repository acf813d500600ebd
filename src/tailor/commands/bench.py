"""`tailor` commands for the bench area (registered on tailor.cli.app)."""

from ..cli import app, err, out  # noqa: F401

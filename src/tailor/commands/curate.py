"""`tailor` commands for the curate area (registered on tailor.cli.app)."""

from ..cli import app, err, out  # noqa: F401

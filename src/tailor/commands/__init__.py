"""CLI commands grouped by area: plain functions, registered on the app by `tailor.cli`."""

import sys

from rich.console import Console

out = Console(width=None if sys.stdout.isatty() else 140)  # logs keep whole tables

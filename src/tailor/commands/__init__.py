"""CLI commands grouped by area; each module registers its commands on `tailor.cli.app`."""

"""The ladder's HTML report (one self-contained file) and a headless-Chromium helper that
checks it renders and takes its screenshot."""

from .browser import console_errors, dump_dom, find_chromium, render, render_url, screenshot
from .html import render_html, write_report

__all__ = ["console_errors", "dump_dom", "find_chromium", "render", "render_html", "render_url", "screenshot",
           "write_report"]

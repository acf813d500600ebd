"""Headless Chromium for checking a report: console errors, the rendered DOM and a full-page
screenshot, all from one page load.

Talks the Chrome DevTools protocol over `--remote-debugging-pipe` (JSON messages separated by
NUL bytes on file descriptors 3 and 4), so it needs only the standard library: no websocket
client, no chromedriver. Console errors come from the page's own events (uncaught exceptions,
console.error, and browser log entries such as a blocked or failed resource load), which
`--dump-dom` or log scraping cannot report reliably.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TailorError
from ..utils import atomic_write_bytes

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# Flags that work in a container with no network: no GPU, no background traffic that would fail
# and add noise to the log. The sandbox stays on (see `flags`).
FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe")
_TRAMPOLINE = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
               "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
MAX_SCREENSHOT_HEIGHT = 20000  # px; Chromium refuses larger textures


def flags() -> tuple[str, ...]:
    """Chromium's flags for this process. `--no-sandbox` only as root, where Chromium refuses to
    start with its sandbox on; any other user keeps the sandbox between the page and the machine."""
    return FLAGS + (("--no-sandbox",) if os.geteuid() == 0 else ())


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: $TAILOR_CHROMIUM, then the usual names on PATH."""
    override = os.environ.get("TAILOR_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What one headless load of a page produced."""
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    dom: str = ""  # document.documentElement.outerHTML after load
    png_path: Path | None = None
    height: int = 0  # full page height in CSS px
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included


def render(html_path: str | Path, png_path: str | Path | None = None, width: int = 1280,
           timeout_s: float = 60.0) -> PageCheck:
    """Load `html_path` in headless Chromium; collect console errors and the DOM, and write a
    full-page PNG screenshot to `png_path` when given."""
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise TailorError(f"{html_path}: no such file to render")
    with _Browser(timeout_s) as browser:
        return browser.check(html_path.as_uri(), png_path, width)


def render_url(url: str, png_path: str | Path | None = None, width: int = 1280, timeout_s: float = 60.0) -> PageCheck:
    """`render` for a page a server serves (tailor ui): the same checks, and every request it made."""
    with _Browser(timeout_s) as browser:
        return browser.check(url, png_path, width)


def console_errors(html_path: str | Path) -> list[str]:
    """Console errors, uncaught exceptions and failed resource loads of the page (empty = clean)."""
    return render(html_path).errors


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280) -> Path:
    """Full-page PNG of the page at `width` CSS px; returns `png_path`."""
    result = render(html_path, png_path, width)
    return result.png_path


def dump_dom(html_path: str | Path) -> str:
    """The page's DOM after scripts ran (like `chromium --dump-dom`)."""
    return render(html_path).dom


# ---------------------------------------------------------------- DevTools over a pipe


class _Browser:
    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.binary = find_chromium()
        if not self.binary:
            raise TailorError("no Chromium found: install it (Debian: apt-get install chromium) "
                              "or set TAILOR_CHROMIUM to its path")
        self._next_id = 0
        self._buffer = b""
        self._pending: deque[dict] = deque()
        self.events: list[dict] = []

    def __enter__(self):
        self._profile = tempfile.TemporaryDirectory(prefix="tailor-chromium-")
        # stderr goes to a file, not a pipe: a chatty browser must never block on a full pipe
        self._log = open(Path(self._profile.name) / "stderr.log", "w+b")
        r, self._to_chrome = os.pipe()
        self._from_chrome, w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4. A tiny Python trampoline
        # moves the pipe ends there and execs Chromium (subprocess cannot renumber fds, and a
        # preexec_fn is unsafe with threads); the ends first go to fds >= 10 so that neither
        # dup2 overwrites the other.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (r, w))
        os.close(r)
        os.close(w)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(child_r), str(child_w), self.binary, *flags(),
                 f"--user-data-dir={self._profile.name}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
                pass_fds=(child_r, child_w))
        finally:
            os.close(child_r)
            os.close(child_w)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", wait=False)
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._log.close()
            self._profile.cleanup()

    def check(self, url: str, png_path, width: int) -> PageCheck:
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self._send(f"{domain}.enable", session=session)
        self._send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.events.clear()
        nav = self._send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise TailorError(f"Chromium could not open {url}: {nav['errorText']}")
        self._wait_event("Page.loadEventFired", session)
        self._drain(0.3)  # late errors: timers, fonts, deferred work right after load
        result = PageCheck(errors=[_describe(e) for e in self.events if _is_error(e, session)],
                           requests=[e["params"]["request"]["url"] for e in self.events
                                     if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session])
        result.dom = self._evaluate("document.documentElement.outerHTML", session)
        result.height = int(self._evaluate(
            "Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))",
            session))
        if png_path is not None:
            height = max(1, min(result.height, MAX_SCREENSHOT_HEIGHT))
            self._send("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session)
            shot = self._send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                              session=session)
            png_path = Path(png_path)
            png_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(png_path, base64.b64decode(shot["data"]))
            result.png_path = png_path
        return result

    # ------------------------------------------------------------ protocol plumbing

    def _evaluate(self, expression: str, session: str):
        reply = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                           session=session)
        return reply.get("result", {}).get("value")

    def _send(self, method: str, params: dict | None = None, session: str | None = None,
              wait: bool = True) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise TailorError(f"Chromium exited (code {self.proc.poll()}) before {method}") from None
        if not wait:
            return {}
        want = self._next_id
        deadline = time.monotonic() + self.timeout_s
        while True:
            m = self._next(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise TailorError(f"Chromium {method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def _wait_event(self, method: str, session: str) -> None:
        if any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            return
        deadline = time.monotonic() + self.timeout_s
        while True:
            m = self._next(deadline)
            self.events.append(m)
            if m.get("method") == method and m.get("sessionId") == session:
                return

    def _drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._next(deadline, quiet=True))
        except TimeoutError:
            pass

    def _stderr_tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-500:].strip()

    def _next(self, deadline: float, quiet: bool = False) -> dict:
        """The next message from Chromium (blocks until one arrives or the deadline passes;
        `quiet` turns the deadline into TimeoutError instead of a TailorError)."""
        while not self._pending:
            if b"\0" in self._buffer:
                *complete, self._buffer = self._buffer.split(b"\0")
                self._pending.extend(json.loads(m) for m in complete if m)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                if quiet:
                    raise TimeoutError
                raise TailorError(f"Chromium did not answer within {self.timeout_s:.0f} s")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise TailorError(f"Chromium exited (code {self.proc.poll()}): {self._stderr_tail()}")
                self._buffer += chunk
        return self._pending.popleft()


def _is_error(event: dict, session: str) -> bool:
    if event.get("sessionId") != session:
        return False
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return False


def _describe(event: dict) -> str:
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        d = params.get("exceptionDetails", {})
        text = d.get("exception", {}).get("description") or d.get("text", "exception")
        return f"exception at line {d.get('lineNumber', 0) + 1}: {text}"
    if event["method"] == "Runtime.consoleAPICalled":
        args = params.get("args", [])
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
    entry = params.get("entry", {})
    where = f" ({entry['url']})" if entry.get("url") else ""
    return f"{entry.get('source', 'log')}: {entry.get('text', '')}{where}"

"""Headless Chromium driven over the DevTools protocol on a pipe: no driver, no websocket, no package.

``chromium --remote-debugging-pipe`` reads protocol commands (JSON, NUL-terminated) from file
descriptor 3 and writes replies and events to descriptor 4. That is all the browser test needs:
open a page at a given width, collect console errors and uncaught exceptions, evaluate
JavaScript, take a screenshot. (Selenium would need chromium-driver of the browser's exact
version, Playwright a 40 MB driver with its own Node; both are more to install than this file.)

    with Browser.start() as browser:
        page = browser.open("file:///.../index.html", width=1280)
        page.evaluate("document.title")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The browser's path, or None (the browser test then skips)."""
    return os.environ.get("CHROMIUM") or next((p for name in CANDIDATES if (p := shutil.which(name))), None)


class Browser:
    def __init__(self, proc: subprocess.Popen, to_browser, from_browser, profile: tempfile.TemporaryDirectory):
        self.proc, self.to_browser, self.from_browser, self.profile = proc, to_browser, from_browser, profile
        self.next_id = 0
        self.buffer = b""
        self.events: list[dict] = []

    @classmethod
    def start(cls, executable: str | None = None) -> Browser:
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no chromium on PATH")
        profile = tempfile.TemporaryDirectory(prefix="dora-bench-chromium-")
        # fds 3 and 4 in the child: 3 is what it reads, 4 what it writes
        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()

        def arrange() -> None:  # in the child: first out of the way (either may be 3 or 4), then in place
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (child_reads, child_writes)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--allow-file-access-from-files",
                f"--user-data-dir={profile.name}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),  # kept open after arrange(), which runs before the other fds are closed
            preexec_fn=arrange,
        )
        os.close(child_reads)
        os.close(child_writes)
        return cls(
            proc, os.fdopen(parent_writes, "wb", buffering=0), os.fdopen(parent_reads, "rb", buffering=0), profile
        )

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.to_browser.close()
        self.from_browser.close()
        self.profile.cleanup()

    # -- the protocol ------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = self.from_browser.read(65536)
            if not chunk:
                raise ConnectionError("chromium closed the pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """Send one command and wait for its reply; events that arrive meanwhile are kept in ``events``."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.to_browser.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, session: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for k, message in enumerate(self.events):
                if message.get("method") == event and message.get("sessionId") == session:
                    return self.events.pop(k)
            self.events.append(self._read_message(deadline))

    def open(self, url: str, width: int, height: int = 900) -> Page:
        """A new tab ``width`` CSS pixels wide (a phone at 390 px: mobile emulation, scale 1) showing ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
            session=session,
        )
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression (JSON-serialisable); raises on a JavaScript exception."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (the Log domain) seen so far."""
        self.browser.send("Runtime.evaluate", {"expression": "0"}, session=self.session)  # drain pending events
        found = []
        for message in self.browser.events:
            if message.get("sessionId") != self.session:
                continue
            params = message.get("params", {})
            if message.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif message.get("method") == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
            elif message.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return found

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            width, height = self.evaluate(
                "[document.documentElement.clientWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": min(height, 16000), "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, session=self.session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

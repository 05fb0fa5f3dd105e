"""Headless Chromium (Debian's `chromium`), driven over the DevTools protocol on a pipe.

`--remote-debugging-pipe` speaks CDP as NUL-terminated JSON on file descriptors 3 (to the
browser) and 4 (from it): no driver to download, no port, no Python package. The page is loaded
through the daemon's real HTTP server; `Network.setExtraHTTPHeaders` sends the bearer token.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_S = 30.0


class BrowserError(Exception):
    pass


class Browser:
    """One headless browser with one tab; `close()` ends the process."""

    def __init__(self, *, width: int = 1200, height: int = 900) -> None:
        if CHROMIUM is None:
            raise BrowserError("chromium is not installed (apt-get install chromium)")
        self._profile = tempfile.mkdtemp(prefix="groupsync-chromium-")
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def on_3_and_4() -> None:  # in the child, before exec: the pipe ends where CDP wants them
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(3, 4, to_browser, from_browser),
            preexec_fn=on_3_and_4,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        attached = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self._session: str | None = attached["sessionId"]
        self.call("Page.enable")
        self.call("Network.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if getattr(self, "_session", None) and not method.startswith("Target."):
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        answer = self._wait(lambda m: m.get("id") == self._next_id, method)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def _wait(self, wanted: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise BrowserError(f"no answer from chromium within {TIMEOUT_S:.0f}s: {what}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited while waiting for {what}")
            self._buffer += chunk

    def headers(self, headers: dict[str, str]) -> None:
        self.call("Network.setExtraHTTPHeaders", headers=headers)

    def open(self, url: str) -> int:
        """Load `url` and wait for its load event; the HTTP status of the document."""
        self.events.clear()
        frame = self.call("Page.navigate", url=url)["frameId"]
        self._wait(lambda m: m.get("method") == "Page.loadEventFired", f"loading {url}")
        for event in self.events:
            params = event.get("params", {})
            document = params.get("type") == "Document" and params.get("frameId") == frame
            if event["method"] == "Network.responseReceived" and document:
                return int(params["response"]["status"])
        raise BrowserError(f"no document response for {url}")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self, selector: str = "body") -> str:
        """What a reader sees of the first element matching `selector` ("" if none)."""
        found = self.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText")
        return found or ""

    def rows(self, section: str) -> list[list[str]]:
        """The table rows of the page's section with id `section`, cell by cell."""
        script = (
            f"[...document.querySelectorAll('#{section} tbody tr')]"
            ".map(r => [...r.cells].map(c => c.innerText))"
        )
        return self.evaluate(script)

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=1200,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(10)
        for fd in (self._in, self._out):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

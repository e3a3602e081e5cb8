"""Headless Chromium driven over the DevTools protocol, for looking at the HTML report as a
reviewer's browser shows it: pages opened, links clicked, videos decoded, screenshots taken.

The protocol runs over a pipe (`--remote-debugging-pipe`: file descriptors 3 and 4 of the
browser, messages ending in a NUL byte), so nothing beyond the standard library is needed.
Chromium comes from Debian (`apt-get install chromium`); `find_chromium` installs it when
running as root on a Debian-like machine, as the SLURM test does with its daemons.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from debian_packages import apt_install

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
         "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
         "--disable-component-update", "--allow-file-access-from-files"]  # fmt: skip

# True once the document, its fonts and images, every video's current frame and the same in
# every frame it can read have loaded.
SETTLED = """
(() => {
  const settled = (doc) => doc.readyState === 'complete' && (!doc.fonts || doc.fonts.status === 'loaded')
    && [...doc.images].every((i) => i.complete)
    && [...doc.querySelectorAll('video')].every((v) => v.error || (v.readyState >= 2 && !v.seeking))
    && [...doc.querySelectorAll('iframe')].every((f) => { let d = null; try { d = f.contentDocument; }
                                                         catch (e) {} return !d || settled(d); });
  return settled(document);
})()
"""


def find_chromium() -> str | None:
    """The Chromium binary; installed with apt when missing and this is root on Debian."""
    for candidate in (
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    if os.geteuid() == 0 and shutil.which("apt-get"):
        if apt_install("chromium") is not None:
            return None
        return find_chromium() if shutil.which("chromium") else None
    return None


class Browser:
    """One headless Chromium with one page: `open`, `evaluate`, `wait_for`, `screenshot`."""

    def __init__(self, chromium: str, width: int = 1400, height: int = 1000):
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        commands, self._write = os.pipe()
        self._read, answers = os.pipe()
        # The browser reads commands on fd 3 and answers on fd 4: its ends go above 10 first,
        # so that plugging one in clobbers nothing.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands, answers)]
        os.close(commands)
        os.close(answers)

        def plug():
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        home = os.environ.get("HOME", "")
        env = {**os.environ, "HOME": home if home and os.access(home, os.W_OK) else self.profile.name}
        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self.profile.name}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, preexec_fn=plug, pass_fds=(3, 4),
            start_new_session=True,
        )  # fmt: skip
        for fd in ends:
            os.close(fd)
        self._buffer, self._id = b"", 0
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._send("Page.enable", session=True)
        screen = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self._send("Emulation.setDeviceMetricsOverride", screen, session=True)

    def _send(self, method: str, params: dict | None = None, session: bool = False, timeout: float = 30):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"chromium did not answer {method} in {timeout} s")
                if select.select([self._read], [], [], 0.5)[0]:
                    chunk = os.read(self._read, 1 << 20)
                    if not chunk:
                        raise RuntimeError("chromium closed its DevTools pipe")
                    self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url_or_path) -> None:
        url = str(url_or_path) if "://" in str(url_or_path) else Path(url_or_path).resolve().as_uri()
        self._send("Page.navigate", {"url": url}, session=True)
        self.wait_for(SETTLED)

    def evaluate(self, expression: str):
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                  "awaitPromise": True}, session=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        """The value of `expression` once it is truthy (and the page has settled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value and self.evaluate(SETTLED):
                return value
            time.sleep(0.1)
        raise TimeoutError(f"not true within {timeout} s: {expression[:200]}")

    def screenshot(self, path, settle: float = 1.0) -> Path:
        time.sleep(settle)  # the last frame to reach the screen (a video's spinner goes)
        shot = self._send("Page.captureScreenshot", {"format": "png"}, session=True)
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    def close(self) -> None:
        try:
            self._send("Browser.close", timeout=5)
            self.proc.wait(5)
        except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

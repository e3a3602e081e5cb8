"""Running the ffmpeg binary of the imageio-ffmpeg wheel: to completion (`run_ffmpeg`), or
streaming while its log is read (`FfmpegLog`); a failure explained by the line of its log that
says why."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import deque
from pathlib import Path

from avtokens import AvTokensError


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# A job's own thread count (`use_job_threads`, which avtokens.rule calls as it sets torch's):
# what ffmpeg gets where a caller names no count, so a job's every ffmpeg keeps to its `threads:`.
_job_threads: int | None = None


def use_job_threads(threads: int | None) -> None:
    global _job_threads
    _job_threads = threads


def decoding_threads(threads: int | None = None) -> list[str]:
    """Options, before an `-i`, that give its decoder and the filters `threads` threads each
    (None: the job's count, else ffmpeg's own choice, about one per core). Decoded and
    filtered frames are the same whatever the count (`avtokens.picture.TONE_MAP` says where
    it takes care)."""
    threads = threads or _job_threads
    return [] if threads is None else ["-filter_threads", str(threads), "-threads", str(threads)]


def encoding_threads(threads: int | None = None) -> list[str]:
    """Output options that give the encoder `threads` threads (None: the job's count, else
    ffmpeg's own choice)."""
    threads = threads or _job_threads
    return [] if threads is None else ["-threads", str(threads)]


def run_ffmpeg(args: list[str], what: str, source: Path | str) -> bytes:
    """Run ffmpeg to completion; a failure becomes one line naming the file and the cause."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = ffmpeg_reason(proc.stderr.decode(errors="replace").splitlines())
        raise AvTokensError(f"{source}: {what} failed: {reason}")
    return proc.stdout


# ffmpeg's lines about its own threads and files winding down after an error: not the reason.
_WINDING_DOWN = re.compile(
    r"Terminating thread with return code|Task finished with error code|Error closing file|"
    r"Error writing trailer|Conversion failed!|Nothing was written into output file"
)


def ffmpeg_reason(lines) -> str:
    """The line of ffmpeg's log that says why it failed: the last one that is not about
    winding down (the error rate of a file too damaged to decode, a full disk)."""
    lines = [line.strip() for line in lines if line.strip()]
    reasons = [line for line in lines if not _WINDING_DOWN.search(line)] or lines
    return reasons[-1] if reasons else "ffmpeg gave no reason"


_PROGRESS_LINE = re.compile(r"[a-z_0-9]+=.*")  # a `-progress` line: key=value


class FfmpegLog:
    """Reads an ffmpeg process's stderr while it runs (a pipe nobody reads fills up, and ffmpeg
    then waits forever: a damaged file can log thousands of decoding errors), keeping the last
    lines for an error message and the latest `-progress` values."""

    def __init__(self, stream):
        self.lines: deque[str] = deque(maxlen=20)
        self.progress: dict[str, str] = {}
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            if _PROGRESS_LINE.fullmatch(line):
                key, value = line.split("=", 1)
                self.progress[key] = value
            elif line:
                self.lines.append(line)

    def finish(self) -> FfmpegLog:
        """Wait for the process's stderr to end (the process has exited)."""
        self._thread.join()
        return self

    @property
    def reason(self) -> str:
        return ffmpeg_reason(self.lines)

    def counter(self, key: str) -> int:
        return int(self.progress.get(key, 0))

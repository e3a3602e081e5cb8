"""A source file itself: whether a job can be handed it at all, its hash, and what token files
record of it and of its video stream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avtokens.media.frames import DecodedVideo
    from avtokens.media.probe import VideoInfo


def unusable_source(path: Path | str) -> str | None:
    """Why a listed source cannot be handed to a job at all ("no such file", "cannot be read
    (Permission denied)"), or None. One system call each: a sheet may list millions."""
    if not os.path.exists(path):
        return "no such file"
    if not os.access(path, os.R_OK):
        return "cannot be read (Permission denied)"
    return None


def source_record(path: Path | str, name: str, sha256: str) -> dict:
    """What token files record of the file they came from."""
    path = Path(path)
    return {"name": name, "file": path.name, "size": path.stat().st_size, "sha256": sha256}


def video_record(info: VideoInfo, decoded: DecodedVideo) -> dict:
    """What token files record of the video stream: the probe, with what decoding gave."""
    return {**info.as_metadata(), **decoded._asdict(), "duration": float(decoded.frame_count / info.fps)}


def sha256_of(path: Path | str, chunk: int = 1 << 22, storage_options: dict | None = None) -> str:
    """The sha256 of a file, or of an object (a URL: avtokens.storage)."""
    from avtokens.storage import opened

    digest = hashlib.sha256()
    with opened(path, chunk, storage_options) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()

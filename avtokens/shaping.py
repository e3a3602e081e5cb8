"""Training clips of one shape: a preset's targets for the frames its tokenizer sees.

A world model learns time per latent frame and batches latents of one shape, so a preset can
give every video one frame rate (`fps`), one size (`size`) or one of a few (`buckets`, the
nearest to the video's display aspect ratio), and take part of it (`start`, `max_seconds`).
All of it happens in the ffmpeg pipe that decodes the frames (`avtokens.picture` builds the
filters), so no frame is copied more than today and the source is never re-encoded:

- size: the frame, in square pixels, is scaled to cover the bucket and centre-cropped
  (`fit: crop`), or scaled to fit inside it and centre-padded with black (`fit: pad`, the
  picture's rectangle recorded so a reconstruction or a loader can cut the pad off);
- frame rate: ffmpeg's `fps` filter (frames dropped or repeated, each output frame the input
  frame nearest its time) on the timeline that starts at the video's first frame;
- part: the target timeline starts `start` seconds after the first frame and holds at most
  `max_seconds` of it.

The audio is not touched: its codes cover the whole source, and each latent frame takes
those of its stretch of the target timeline (`avtokens.alignment`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

FITS = ("crop", "pad")
MAX_FPS = 240  # more is a typo (a frame count, a sample rate), not a video's rate
_SIZE = re.compile(r"([1-9]\d*)x([1-9]\d*)")
KEYS = ("fps", "size", "buckets", "fit", "start", "max_seconds")  # a preset's fields for it


def parse_size(text) -> tuple[int, int]:
    """(width, height) of "1280x720"."""
    match = _SIZE.fullmatch(str(text).strip())
    if match is None:
        raise ValueError(f"a size is WIDTHxHEIGHT, such as 1280x720, not {text!r}")
    return int(match[1]), int(match[2])


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_rate(value) -> Fraction:
    """A frame rate as a config gives it: 24, 29.97 or "30000/1001"."""
    try:
        rate = None if isinstance(value, bool) else Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        rate = None
    if rate is None:
        raise ValueError(f"a frame rate is a number or a fraction such as 30000/1001, not {value!r}")
    if not 0 < rate <= MAX_FPS:
        raise ValueError(f"a frame rate must be above 0 and at most {MAX_FPS}, not {value}")
    return rate


def _seconds(value, what: str, minimum_excluded: bool) -> Fraction:
    try:
        seconds = Fraction(str(value).strip()) if not isinstance(value, bool) else None
    except (ValueError, ZeroDivisionError):
        seconds = None
    if seconds is None or seconds < 0 or (minimum_excluded and seconds == 0):
        bound = "above 0" if minimum_excluded else "0 or more"
        raise ValueError(f"{what} is a number of seconds {bound}, not {value!r}")
    return seconds


@dataclass(frozen=True)
class Geometry:
    """How a frame of one size becomes a bucket's: scaled to `scaled`, then the rectangle
    `rect` (x, y, width, height) of it kept (crop) or placed in the bucket on black (pad)."""

    bucket: tuple[int, int]
    scaled: tuple[int, int]
    fit: str
    rect: tuple[int, int, int, int]

    @property
    def filters(self) -> list[str]:
        (width, height), (x, y, w, h) = self.bucket, self.rect
        scale = f"scale={self.scaled[0]}:{self.scaled[1]}:flags=lanczos,setsar=1"
        if self.fit == "crop":
            return [scale, f"crop={w}:{h}:{x}:{y}"] if self.scaled != self.bucket else [scale]
        return [scale, f"pad={width}:{height}:{x}:{y}:color=black"] if self.scaled != self.bucket else [scale]

    def as_metadata(self) -> dict:
        x, y, w, h = self.rect
        return {
            "bucket": size_text(self.bucket),
            "fit": self.fit,
            "scaled": size_text(self.scaled),
            # crop: the part of the scaled frame kept; pad: where the picture is in the bucket
            "rect": {"x": x, "y": y, "width": w, "height": h},
        }

    @classmethod
    def from_metadata(cls, record: dict) -> Geometry:
        rect = record["rect"]
        return cls(parse_size(record["bucket"]), parse_size(record["scaled"]), record["fit"],
                   (rect["x"], rect["y"], rect["width"], rect["height"]))  # fmt: skip


@dataclass(frozen=True)
class Shaping:
    """A preset's targets (see the module's description); all empty: the source's size and
    rate, all of it."""

    fps: Fraction | None = None
    buckets: tuple[tuple[int, int], ...] = ()
    fit: str = "crop"
    start: Fraction = Fraction(0)
    max_seconds: Fraction | None = None

    @classmethod
    def from_config(cls, fields: dict) -> Shaping:
        """From a preset's config entry (`KEYS`), raising ValueError naming the field."""
        if "size" in fields and "buckets" in fields:
            raise ValueError("give size or buckets, not both")
        sizes = [fields["size"]] if "size" in fields else list(fields.get("buckets") or [])
        if "buckets" in fields and not sizes:
            raise ValueError("buckets: give at least one size")
        try:
            buckets = tuple(parse_size(size) for size in sizes)
        except ValueError as err:
            raise ValueError(f"{'size' if 'size' in fields else 'buckets'}: {err}") from None
        if len(set(buckets)) != len(buckets):
            raise ValueError(f"buckets: {', '.join(sizes)} lists a size twice")
        fit = fields.get("fit", "crop")
        if fit not in FITS:
            raise ValueError(f"fit must be crop or pad, not {fit!r}")
        try:
            fps = None if fields.get("fps") is None else parse_rate(fields["fps"])
        except ValueError as err:
            raise ValueError(f"fps: {err}") from None
        start = _seconds(fields.get("start", 0), "start", minimum_excluded=False)
        most = fields.get("max_seconds")
        max_seconds = None if most is None else _seconds(most, "max_seconds", minimum_excluded=True)
        return cls(fps, buckets, fit, start, max_seconds)

    @classmethod
    def from_params(cls, params: dict | None) -> Shaping:
        """From `as_params` (what a job gets)."""
        return cls.from_config(params or {})

    def as_params(self) -> dict:
        """The fields as a config gives them, only those set: what a job's params carry."""
        params = {}
        if self.fps is not None:
            params["fps"] = rate_text(self.fps)
        if self.buckets:
            params["buckets"] = [size_text(size) for size in self.buckets]
        if self.buckets and self.fit != "crop":
            params["fit"] = self.fit
        if self.start:
            params["start"] = rate_text(self.start)
        if self.max_seconds is not None:
            params["max_seconds"] = rate_text(self.max_seconds)
        return params

    @property
    def changes_anything(self) -> bool:
        return bool(self.as_params())

    def check_sides(self, multiple: int, what: str) -> None:
        """Every bucket's sides a multiple of `multiple` (the tokenizer's spatial factor)."""
        for width, height in self.buckets:
            if width % multiple or height % multiple:
                raise ValueError(
                    f"bucket {width}x{height}: {what} takes sides that are multiples of {multiple} "
                    f"(its spatial factor; a side in between would be padded inside the tokenizer "
                    f"and the padding coded into every latent frame)"
                )

    def bucket_for(self, display_aspect_ratio: Fraction) -> tuple[int, int] | None:
        """The bucket nearest the display aspect ratio (by the ratio of the two, so 4:3 is as
        far from 1:1 as 1:1 from 3:4; the first listed on a tie); None without buckets."""
        if not self.buckets:
            return None

        def distance(size):
            return abs(math.log(size[0] / size[1] / float(display_aspect_ratio)))

        return min(self.buckets, key=distance)

    def geometry(self, display_aspect_ratio: Fraction) -> Geometry | None:
        """How a frame shown at `display_aspect_ratio` becomes its bucket's (scaled from its
        stored pixels in one step, square pixels out); None without buckets."""
        bucket = self.bucket_for(display_aspect_ratio)
        if bucket is None:
            return None
        (bw, bh), aspect = bucket, Fraction(display_aspect_ratio)
        if self.fit == "crop":  # cover the bucket: the side that overflows is cropped
            if Fraction(bw, bh) > aspect:
                scaled = (bw, max(bh, round(bw / aspect)))
            else:
                scaled = (max(bw, round(bh * aspect)), bh)
            x, y = (scaled[0] - bw) // 2, (scaled[1] - bh) // 2
            return Geometry(bucket, scaled, "crop", (x, y, bw, bh))
        if Fraction(bw, bh) > aspect:  # fit inside the bucket: the side that is short is padded
            scaled = (min(bw, max(1, round(bh * aspect))), bh)
        else:
            scaled = (bw, min(bh, max(1, round(bw / aspect))))
        x, y = (bw - scaled[0]) // 2, (bh - scaled[1]) // 2
        return Geometry(bucket, scaled, "pad", (x, y, scaled[0], scaled[1]))

    def timeline(self, source_rate: Fraction) -> Timeline | None:
        """The target timeline of a video whose frames come at `source_rate`; None when the
        shaping leaves the timeline as it is (no fps, start or max_seconds)."""
        if self.fps is None and not self.start and self.max_seconds is None:
            return None
        rate = self.fps or Fraction(source_rate)
        frames = None if self.max_seconds is None else math.ceil(self.max_seconds * rate)
        return Timeline(rate, math.ceil(self.start * rate), frames)


@dataclass(frozen=True)
class Timeline:
    """Frames at `rate` a second, frame j at (`first_tick` + j) / rate seconds after the
    video's first frame (the first tick at or after `start`), at most `frames` of them. Each
    shows the source frame ffmpeg's `fps` filter picks for its time (the one whose time
    rounds to that tick, or the one before it when none does)."""

    rate: Fraction
    first_tick: int
    frames: int | None

    @property
    def filters(self) -> list[str]:
        """After the timeline is set to start at the first frame (time 0). The start is
        taken off by a constant, not STARTPTS: ffmpeg builds the filters again where the
        frames change size, and would start that part at 0 again."""
        start = f":start_time={float(self.first_tick / self.rate)!r}" if self.first_tick else ""
        chain = [f"fps=fps={rate_text(self.rate)}{start}:round=near"]
        return chain + ([f"setpts=PTS-{self.first_tick}"] if self.first_tick else [])

    @property
    def output_args(self) -> list[str]:
        return ["-frames:v", str(self.frames)] if self.frames is not None else []

    @property
    def start_seconds(self) -> Fraction:
        return self.first_tick / self.rate

    def frames_in(self, duration: float) -> int:
        """About how many frames it holds of a video `duration` seconds long (ffmpeg rounds
        the last one)."""
        count = max(0, math.ceil((Fraction(duration) - self.start_seconds) * self.rate))
        return count if self.frames is None else min(count, self.frames)

    def as_metadata(self) -> dict:
        return {"fps": rate_text(self.rate), "first_tick": self.first_tick,
                "start_seconds": rate_text(self.start_seconds), "max_frames": self.frames}  # fmt: skip

    @classmethod
    def from_metadata(cls, record: dict) -> Timeline:
        return cls(Fraction(record["fps"]), record["first_tick"], record["max_frames"])


def rate_text(value: Fraction) -> str:
    """A Fraction as a config or ffmpeg writes it: "24", "30000/1001"."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"

"""What the tokenizer sees of a source's frames, and the ffmpeg filters that make it.

The Cosmos tokenizers were trained on progressive SDR video with square pixels. Sources
often are not: DVD and broadcast frames have non-square pixels (720x480 shown as 640x480),
broadcast and DVD video is interlaced, phone and streaming video is HDR (PQ or HLG, BT.2020).
Each of these is recorded in the source's stream header; the frames are converted before
tokenizing, the same way every time a source is read (encode, scoring, comparison), and the
token file records what was done.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from avtokens.media import VideoInfo, ratio_text
from avtokens.shaping import Geometry, Shaping, Timeline

PIXELS = ("square", "stored")
HDR_TRANSFERS = {"smpte2084": "PQ", "arib-std-b67": "HLG"}
# BT.2408: HDR reference white is 203 cd/m2; it becomes SDR white. Mobius keeps the range
# below its knee linear and rolls highlights off, so SDR-range material keeps its contrast
# and colour. zscale on one thread each: cut into slices for several, its frames differ from
# the whole frame's (a 720x480 PQ clip at 4 threads: 6.6% of values, up to 31 levels), and
# the tokenizer's frames would depend on the job's thread count.
TONE_MAP = ("zscale=t=linear:npl=203:threads=1,format=gbrpf32le,zscale=p=bt709:threads=1,"
            "tonemap=tonemap=mobius:desat=0,zscale=t=bt709:m=bt709:r=tv:threads=1,"
            "format=yuv444p")  # fmt: skip
# One output frame per input frame (send_frame), so frame counts and timing stay those of the stream.
DEINTERLACE = "bwdif=mode=send_frame:parity=auto:deint=all"


@dataclass(frozen=True)
class Picture:
    width: int  # what the tokenizer sees
    height: int
    stored_width: int  # the decoded frames, before conversion
    stored_height: int
    sample_aspect_ratio: Fraction  # of the tokenizer's frames: 1 unless pixels are kept as stored
    display_aspect_ratio: Fraction  # the source's, kept by every output
    pixels: str  # "square" (resampled to the display aspect) or "stored"
    deinterlaced: str | None  # the field order that was deinterlaced
    tone_mapped: str | None  # "PQ" or "HLG", tone-mapped to SDR BT.709
    # Where the frames come from: the source's chosen stream (None: the first) and the rate of
    # the constant-rate timeline they are decoded onto (None: as they come; media.frames.decoding_args).
    video_stream: int | None = None
    frame_rate: Fraction | None = None
    # The first frame's time on the container's clock, where the timeline starts (None: files
    # of older versions, which start it at the first frame the filters see).
    video_start: float | None = None
    # The filters that give a stream that changes size one size (`VideoInfo.fitting`), first.
    fit: str = ""
    # A preset's targets (avtokens.shaping): the frames brought to a bucket's size, and put on
    # a timeline of its own (a frame rate, a part of the video).
    geometry: Geometry | None = None
    timeline: Timeline | None = None

    @property
    def filters(self) -> str:
        """The ffmpeg filter chain from decoded frames to the tokenizer's ("" for none): the
        frame rate changed after deinterlacing (which needs the frames as they come) and
        before the rest (fewer frames to convert where it drops some)."""
        chain = [self.fit] if self.fit else []
        if self.deinterlaced:
            chain.append(DEINTERLACE)
        if self.timeline:
            chain += self.timeline.filters
        if self.tone_mapped:
            chain.append(TONE_MAP)
        if self.geometry:
            chain += self.geometry.filters
        elif (self.width, self.height) != (self.stored_width, self.stored_height):
            chain.append(f"scale={self.width}:{self.height}:flags=lanczos,setsar=1")
        return ",".join(chain)

    @property
    def converted(self) -> Picture:
        """The tokenizer's frames as a file of them stores them (a reconstruction): the same
        size and pixels, nothing left to convert."""
        return replace(
            self, stored_width=self.width, stored_height=self.height, deinterlaced=None, tone_mapped=None,
            video_stream=None, frame_rate=None, video_start=None, fit="", geometry=None, timeline=None,
        )  # fmt: skip

    def as_metadata(self) -> dict:
        return {
            "width": self.width, "height": self.height,
            "stored_width": self.stored_width, "stored_height": self.stored_height,
            "sample_aspect_ratio": ratio_text(self.sample_aspect_ratio),
            "display_aspect_ratio": ratio_text(self.display_aspect_ratio),
            "pixels": self.pixels, "deinterlaced": self.deinterlaced, "tone_mapped": self.tone_mapped,
            "filters": self.filters, "video_stream": self.video_stream,
            "frame_rate": None if self.frame_rate is None else ratio_text(self.frame_rate, "/"),
            "video_start": self.video_start, "fit": self.fit,
            # Only where a preset has targets: the records of files made before they existed.
            **({"geometry": self.geometry.as_metadata()} if self.geometry else {}),
            **({"timeline": self.timeline.as_metadata()} if self.timeline else {}),
        }  # fmt: skip

    @classmethod
    def from_metadata(cls, record: dict) -> Picture:
        # Files of older versions have no stream and rate: the first stream, as it comes.
        fields = {k: record[k] for k in cls.__dataclass_fields__ if k in record}
        for key in ("sample_aspect_ratio", "display_aspect_ratio", "frame_rate"):
            if fields.get(key) is not None:
                fields[key] = Fraction(fields[key].replace(":", "/"))
        if fields.get("geometry") is not None:
            fields["geometry"] = Geometry.from_metadata(fields["geometry"])
        if fields.get("timeline") is not None:
            fields["timeline"] = Timeline.from_metadata(fields["timeline"])
        return cls(**fields)


def plan_picture(info: VideoInfo, pixels: str = "square", deinterlace: bool = True,
                 fit: str = "pad", shaping: Shaping | None = None) -> Picture:  # fmt: skip
    """How `info`'s frames become the tokenizer's: square pixels at the display aspect ratio
    (`pixels="square"`: width resampled, height kept, sizes even) or the stored pixels;
    interlaced streams deinterlaced unless `deinterlace` is off; HDR tone-mapped to SDR; a
    stream that changes size brought to the size shown longest (`fit`: `VideoInfo.fitting`).
    A preset's `shaping` brings them to its bucket (in square pixels, whatever `pixels` says)
    and onto its timeline."""
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {PIXELS}, not {pixels!r}")
    sar = info.sample_aspect_ratio
    width, height = info.width, info.height
    if pixels == "square" and sar != 1:
        width = max(2, 2 * round(info.width * sar / 2))
    display_aspect_ratio = info.width * sar / info.height
    shaping = shaping or Shaping()
    geometry = shaping.geometry(display_aspect_ratio)
    if geometry is not None:
        (width, height), sar, pixels = geometry.bucket, Fraction(1), "square"
        display_aspect_ratio = Fraction(*geometry.bucket)
    interlaced = info.field_order != "progressive"
    return Picture(
        width=width, height=height, stored_width=info.width, stored_height=info.height,
        sample_aspect_ratio=sar if pixels == "stored" else Fraction(1),
        display_aspect_ratio=display_aspect_ratio, pixels=pixels,
        deinterlaced=info.field_order if interlaced and deinterlace else None,
        tone_mapped=HDR_TRANSFERS.get(info.transfer),
        video_stream=info.video_stream, frame_rate=info.frame_rate, video_start=info.video_start,
        fit=info.fitting(fit), geometry=geometry, timeline=shaping.timeline(info.fps),
    )  # fmt: skip

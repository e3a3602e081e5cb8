"""The bundled example: a synthetic clip with moving content and a changing soundtrack."""

from __future__ import annotations

from avtokens.atomic import atomic_output
from avtokens.media import run_ffmpeg

# 320x180 (not a multiple of 16) at 29.97 fps, stereo 48 kHz: exercises spatial padding,
# an exact fractional frame rate, resampling and the stereo downmix.
_VIDEO = "testsrc2=size=320x180:rate=30000/1001"
_AUDIO = (
    "aevalsrc=0.3*sin(2*PI*(220+110*t)*t)+0.05*sin(2*PI*3000*t)*gt(mod(t\\,1)\\,0.5)"
    "|0.25*sin(2*PI*440*t)*(0.5+0.5*sin(2*PI*1.5*t)):s=48000"
)


def write_example_video(dest, seconds: float = 4.0) -> None:
    """The example clip, the same bytes on every run and machine (of one ffmpeg build): x264
    on one thread, as its output depends on its thread count, which ffmpeg would otherwise
    take from the machine's cores."""
    with atomic_output(dest) as tmp:
        run_ffmpeg(
            ["-y", "-f", "lavfi", "-i", _VIDEO, "-f", "lavfi", "-i", _AUDIO, "-t", str(seconds),
             "-c:v", "libx264", "-threads", "1", "-pix_fmt", "yuv420p", "-crf", "18", "-c:a", "aac",
             "-b:a", "192k", "-f", "mp4", str(tmp)],
            "making the example video", dest,
        )  # fmt: skip

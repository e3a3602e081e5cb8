"""Broadcast captures: MPEG-TS files whose audio changes format at an advert (sample rate,
channel layout, codec), whose audio stops for a part, whose picture changes size or rate, and
whose 33-bit timestamps wrap. Each capture is made as a tuner's recording is: parts encoded on
their own by ffmpeg, each on its stretch of the clock, the files joined byte by byte. Where a
beep belongs is worked out from each part's own file with PyAV (its first audio timestamp,
and the beep's sample in its own decoded audio), not with this project's reading code."""

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile

from avtokens import load_tokens
from avtokens.alignment import code_frame_ranges
from avtokens.media import extract_audio, probe, read_frame_windows, run_ffmpeg
from avtokens.picture import plan_picture
from avtokens.presets import make_preset
from avtokens.visual import encode_video_file
from avtokens.windows import video_latent_spans

RATE = 44100
DAC_CODE_FRAME = 512 / RATE  # 11.6 ms: the audio's placement is right within one of these
PART = 2.0  # seconds of video in each part
AUDIO_DELAY = 0.2  # each part's audio starts this long after its video (no part's audio overlaps another's)
BEEP = 0.5  # seconds into each part's audio


def make_part(path: Path, offset: float, rate: int = 48000, layout: str = "stereo", codec: str = "aac",
              size: str = "320x180", fps: int = 25, audio: bool = True) -> Path:  # fmt: skip
    """A part of a capture: `PART` seconds of video from `offset` on the clock, and audio with
    a 1 kHz beep `BEEP` seconds in, from `AUDIO_DELAY` after the video on."""
    tone = f"aevalsrc='if(between(t,{BEEP},{BEEP + 0.1}),0.8*sin(2*PI*1000*t),0)':s={rate}:c={layout}:d=1.6"
    sound = ["-itsoffset", str(AUDIO_DELAY), "-f", "lavfi", "-i", tone, "-c:a", codec] if audio else ["-an"]
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}:d={PART}", *sound,
         "-c:v", "libx264", "-bf", "0", "-output_ts_offset", str(offset), "-f", "mpegts", str(path)],
        "making a part", path,
    )  # fmt: skip
    return path


def capture(path: Path, parts: list[dict], start: float = 0.0) -> list[Path]:
    """Join parts (each `make_part`'s settings) into one capture, one after the other on the clock."""
    files = [make_part(path.with_suffix(f".{i}.ts"), start + i * PART, **settings)
             for i, settings in enumerate(parts)]  # fmt: skip
    path.write_bytes(b"".join(f.read_bytes() for f in files))
    return files


def first_video_time(path: Path) -> float:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).time


def beep_time(part: Path) -> float | None:
    """The beep's time on the container's clock, from the part's own file: its first audio
    timestamp, and the beep's sample in its audio (counted, not from later frames' times)."""
    with av.open(str(part)) as container:
        if not container.streams.audio:
            return None
        frames = list(container.decode(audio=0))
    samples = np.concatenate([f.to_ndarray()[0] for f in frames])  # fltp: channel 0
    return frames[0].time + np.nonzero(np.abs(samples) > 0.4)[0][0] / frames[0].sample_rate


def beeps_in(wav: Path) -> list[float]:
    """Seconds to the start of each beep in the wav."""
    samples, rate = soundfile.read(wav)
    loud = np.nonzero(np.abs(samples) > 0.2)[0] / rate
    return [t for i, t in enumerate(loud) if i == 0 or t - loud[i - 1] > 0.3]


CHANGES = {
    "sample rate": [{}, {"rate": 44100}],
    "layout": [{}, {"layout": "5.1"}],
    "both": [{"layout": "5.1"}, {"rate": 44100, "layout": "mono"}],
    "two changes": [{}, {"rate": 32000, "layout": "mono"}, {"layout": "5.1"}],
    "codec": [{}, {"codec": "mp2"}],
    "a part without audio": [{}, {"audio": False}, {}],
    "audio seconds after the video": [{"audio": False}, {"rate": 44100}],
}


@pytest.mark.parametrize("change", CHANGES)
def test_audio_that_changes_format_stays_on_the_videos_clock(tmp_path, change, caplog):
    source = tmp_path / "capture.ts"
    parts = capture(source, CHANGES[change])
    start = first_video_time(source)
    truth = [t - start for t in map(beep_time, parts) if t is not None]
    wav, timeline_file = tmp_path / "a.wav", tmp_path / "timeline.json"
    with caplog.at_level(logging.WARNING):
        extract_audio(source, "v", RATE, wav, timeline_file)
    timeline = json.loads(timeline_file.read_text())
    video, placement = timeline["video"], timeline["audio_placement"]
    assert video["frame_count"] == 25 * PART * len(parts)

    heard = beeps_in(wav)
    assert len(heard) == len(truth) and np.allclose(heard, truth, atol=DAC_CODE_FRAME), (heard, truth)
    duration = video["frame_count"] / Fraction(video["fps"])
    assert abs(soundfile.info(wav).duration - duration) < DAC_CODE_FRAME
    # Each beep's code frame lies in the code range of the latent frame that shows its time.
    spans = video_latent_spans(video["frame_count"], 17, 8)
    ranges = code_frame_ranges(spans, Fraction(video["fps"]), RATE, 512)
    for heard_at, true_at in zip(heard, truth, strict=True):
        frame = int(true_at * 25)
        latent = next(i for i, (first, end) in enumerate(spans) if first <= frame < end)
        low, end = ranges[latent]
        assert low <= int(heard_at * RATE / 512) < end or abs(heard_at * RATE / 512 - low) < 1

    formats = {(p.get("rate", 48000), p.get("layout", "stereo"), p.get("codec", "aac"))
               for p in CHANGES[change] if p.get("audio", True)}  # fmt: skip
    assert placement["format_changes"] == len(formats) - 1
    if placement["format_changes"]:
        assert f"the audio changes format {'once' if len(formats) == 2 else '2 times'}" in caplog.text
    if not all(part.get("audio", True) for part in CHANGES[change]):
        assert placement["gaps_filled"] > PART


def test_a_plain_files_audio_is_what_ffmpeg_gives(tmp_path):
    """Where nothing changes, the wav is sample for sample what ffmpeg's own downmix and
    resampler make of the file."""
    source = tmp_path / "plain.ts"
    capture(source, [{}])
    extract_audio(source, "v", RATE, tmp_path / "a.wav", tmp_path / "t.json")
    ours, _ = soundfile.read(tmp_path / "a.wav", dtype="int16")
    start = first_video_time(source)
    run_ffmpeg(["-y", "-i", str(source), "-map", "0:a", "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_s16le",
                str(tmp_path / "ffmpeg.wav")], "extracting", source)  # fmt: skip
    theirs, _ = soundfile.read(tmp_path / "ffmpeg.wav", dtype="int16")
    with av.open(str(source)) as container:
        audio_start = next(container.decode(audio=0)).time
    lead = round((audio_start - start) * RATE)  # silence before the audio, on the video's clock
    assert not ours[:lead].any()
    n = len(theirs)
    assert np.abs(ours[lead : lead + n].astype(int) - theirs).max() <= 1


def test_timestamps_that_wrap_around_keep_the_timeline(tmp_path):
    """MPEG-TS clocks count 33 bits of 90 kHz and wrap after 26.5 hours: a recording that
    crosses the wrap keeps every frame and its audio in place."""
    wrap = 2**33 / 90000
    source = tmp_path / "wrap.ts"
    parts = capture(source, [{}, {}], start=wrap - 1.4 - PART)  # the second part starts at the wrap
    truth = [beep_time(part) for part in parts]
    truth = [(t - first_video_time(parts[0])) % wrap for t in truth]
    wav, timeline = tmp_path / "a.wav", tmp_path / "t.json"
    extract_audio(source, "v", RATE, wav, timeline)
    assert json.loads(timeline.read_text())["video"]["frame_count"] == 100
    assert np.allclose(beeps_in(wav), truth, atol=DAC_CODE_FRAME), (beeps_in(wav), truth)


def test_a_picture_that_changes_size_is_fitted_into_the_size_shown_longest(tmp_path, demo_weights, caplog):
    source = tmp_path / "capture.ts"
    capture(source, [{}, {"size": "320x240"}, {}])  # an HD channel's 4:3 advert, in small
    info = probe(source)
    assert (info.width, info.height) == (320, 180)
    assert info.sizes == ((0.0, 320, 180), (2.0, 320, 240), (4.0, 320, 180))
    frames = np.concatenate(list(read_frame_windows(source, plan_picture(info), 25)))
    assert frames.shape == (150, 180, 320, 3)
    # The 4:3 frames are 240x180, centred: black bars of 40 columns each side.
    advert, programme = frames[60].astype(int), frames[10].astype(int)
    assert advert[:, :38].max() <= 16 and advert[:, -38:].max() <= 16 and advert[:, 42:-42].mean() > 60
    assert programme[:, :38].max() > 100  # the programme fills the frame
    # picture.fit: crop fills the frame with the advert's middle, scaled as much.
    cropped = np.concatenate(list(read_frame_windows(source, plan_picture(info, fit="crop"), 25)))
    assert cropped.shape == frames.shape and np.array_equal(cropped[:50], frames[:50])
    assert cropped[60][:, :38].max() > 100
    # Said, and recorded in the token file.
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "weights": "demo"})
    tokens = tmp_path / "t.safetensors"
    with caplog.at_level(logging.WARNING):
        encode_video_file(source, tokens, preset, demo_weights / preset.model, "cpu", 2, "v")
    assert "changes size 2 times (320x240 at 2.00 s, 320x180 at 4.00 s)" in caplog.text
    video = load_tokens(tokens).metadata["video"]
    assert video["size_changes"] == 2 and video["frame_count"] == 150
    assert [s["at"] for s in video["sizes"]] == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("fps", [50, 30])
def test_a_frame_rate_change_keeps_every_frame_at_its_time(tmp_path, fps):
    """A 25 fps programme with a part at another rate. Where every frame's time fits one finer
    rate (25 and 50), that is the timeline: each frame of the slower part is shown twice (and
    counted as filled). Where none does (25 and 30), the rate is variable: the frames as they
    come, the token file's fps their average."""
    source = tmp_path / "capture.ts"
    capture(source, [{}, {"fps": fps}])
    info, decoded = probe(source), {}
    frames = sum(len(w) for w in read_frame_windows(source, info, 32, decoded=decoded))
    if fps == 50:
        assert (info.fps, info.variable_rate) == (50, False)
        assert frames == 50 * 2 * PART and decoded["filled_frames"] == 25 * PART
    else:
        assert info.variable_rate and info.frame_rate is None
        assert frames == 25 * PART + 30 * PART == info.packet_count
    extract_audio(source, "v", RATE, tmp_path / "a.wav", tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["video"]["frame_count"] == frames

"""Timelines as containers have them: MPEG-TS and program streams whose audio starts before
their video, files damaged in the middle, more than one video or audio track. Clips are made
with ffmpeg; what players would do is read back with PyAV (the container's own timestamps),
not with this project's reading code."""

import json
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile
from av.stream import Disposition
from helpers import make_clip

from avtokens import AvTokensError, load_tokens
from avtokens.media import extract_audio, ffmpeg_exe, probe, read_frame_windows, run_ffmpeg
from avtokens.presets import make_preset
from avtokens.visual import encode_video_file

DAC_CODE_FRAME = 512 / 44100  # 11.6 ms


def beep_clip(path, lead: float, container: str, video_codec: str):
    """Black video with a 1 kHz beep, whose audio starts `lead` seconds before the video."""
    beep = 1.0 + lead
    tone = f"aevalsrc='if(between(t,{beep},{beep + 0.1}),sin(2*PI*1000*t),0)':s=48000:d=4"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", tone,
         "-itsoffset", str(lead), "-f", "lavfi", "-i", "color=black:size=64x48:rate=25:d=3",
         "-map", "1:v", "-map", "0:a", "-fps_mode", "passthrough",
         "-c:v", video_codec, "-c:a", "mp2", "-f", container, str(path)],
        "making a clip", path,
    )  # fmt: skip
    return path


def onset(samples: np.ndarray, rate: int) -> float:
    """Seconds to the first sample at more than half of full scale."""
    return np.nonzero(np.abs(samples) > 0.5)[0][0] / rate


def played_beep_offset(path) -> tuple[float, float, float]:
    """As a player presents the file (PyAV, the container's clock): the first video frame's
    time, the first audio frame's time, and the beep's time after the first video frame."""
    with av.open(str(path)) as container:
        first_video = next(container.decode(video=0)).time
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float64) / 32768  # s16p
    return first_video, frames[0].time, frames[0].time + onset(samples, frames[0].sample_rate) - first_video


@pytest.mark.parametrize("lead", [0.021, 0.5])
@pytest.mark.parametrize(
    "container, suffix, codec", [("mpegts", ".ts", "libx264"), ("vob", ".vob", "mpeg2video")]
)
def test_audio_that_starts_before_the_video_stays_in_sync(tmp_path, lead, container, suffix, codec):
    source = beep_clip(tmp_path / f"capture{suffix}", lead, container, codec)
    first_video, first_audio, beep = played_beep_offset(source)
    assert first_audio < first_video - 0.015  # the audio does lead (the case this is about)
    wav, timeline = tmp_path / "a.wav", tmp_path / "timeline.json"
    extract_audio(source, "v", 44100, wav, timeline)
    samples, rate = soundfile.read(wav)
    assert abs(onset(samples, rate) - beep) < DAC_CODE_FRAME
    video = json.loads(timeline.read_text())["video"]
    assert video["frame_count"] == 75 and video["video_start"] == pytest.approx(first_video, abs=1e-6)


def overwrite_packets(path, packets: range):
    """Random bytes over the data of the video packets numbered `packets`, as a damaged
    download or disk has them; the container's index stays intact."""
    with av.open(str(path)) as container:
        places = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in (places[k] for k in packets):
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    damaged = path.with_name(f"damaged{path.suffix}")
    damaged.write_bytes(bytes(data))
    return damaged


def drop_ts_packets(path, first_byte: int, count: int):
    """Whole 188-byte MPEG-TS packets cut out, as a lossy broadcast reception loses them."""
    data = bytearray(path.read_bytes())
    start = first_byte - first_byte % 188
    del data[start : start + 188 * count]
    damaged = path.with_name(f"damaged{path.suffix}")
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.parametrize("damage", ["overwritten mp4", "lost TS packets"])
def test_a_damaged_file_keeps_its_timeline(tmp_path, demo_weights, damage):
    """Frames that cannot be decoded become repeats of the frame before: 100 frames stay 100,
    every frame after the damage keeps its time (so its audio), and the token files say how
    many were filled."""
    suffix, muxer = (".mp4", "mp4") if damage == "overwritten mp4" else (".ts", "mpegts")
    good = tmp_path / f"good{suffix}"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=r=48000",
         "-frames:v", "100", "-shortest", "-c:v", "libx264", "-g", "10", "-bf", "0", "-c:a", "mp2",
         "-f", muxer, str(good)],
        "making a clip", good,
    )  # fmt: skip
    if damage == "overwritten mp4":
        source = overwrite_packets(good, range(41, 48))
    else:
        source = drop_ts_packets(good, good.stat().st_size // 2, 40)
    passthrough = run_ffmpeg(["-i", str(source), "-map", "0:v", "-fps_mode", "passthrough",
                              "-f", "framecrc", "-"], "counting", source).decode()  # fmt: skip
    decodable = sum(1 for line in passthrough.splitlines() if line.startswith("0,"))
    assert decodable < 100  # ffmpeg alone loses frames: the case this is about

    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "weights": "demo"})
    folder, tokens = demo_weights / preset.model, tmp_path / "t.safetensors"
    encode_video_file(source, tokens, preset, folder, "cpu", 2, "v")
    visual = load_tokens(tokens).metadata["video"]
    extract_audio(source, "v", 44100, tmp_path / "a.wav", tmp_path / "timeline.json")
    timeline = json.loads((tmp_path / "timeline.json").read_text())["video"]
    for video in (visual, timeline):
        assert (video["frame_count"], video["filled_frames"], video["fps"]) == (100, 100 - decodable, "25/1")
    # From the next keyframe after the damage on, each frame is the undamaged file's frame at its place.
    ours = np.concatenate(list(read_frame_windows(source, probe(source), 25)))
    intact = np.concatenate(list(read_frame_windows(good, probe(good), 25)))
    assert len(ours) == len(intact) == 100 and np.array_equal(ours[60:], intact[60:])


def test_the_video_and_audio_a_player_would_choose(tmp_path):
    """A Matroska file whose first video track is a one-frame still (not default) and whose
    first audio track is silence (not default): the default tracks are the ones tokenized."""
    still, movie = tmp_path / "still.png", tmp_path / "movie.mp4"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "color=red:size=200x200", "-frames:v", "1", str(still)], "still", still
    )
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-f", "lavfi", "-i", "sine=f=440:r=48000",
         "-frames:v", "30", "-shortest", "-c:v", "libx264", "-c:a", "aac", str(movie)], "movie", movie,
    )  # fmt: skip
    source = tmp_path / "tracks.mkv"
    run_ffmpeg(
        ["-y", "-i", str(still), "-i", str(movie), "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo:d=1.2",
         "-map", "0:v", "-map", "1:v", "-map", "2:a", "-map", "1:a", "-c:v:0", "png", "-c:v:1", "copy",
         "-c:a:0", "aac", "-c:a:1", "copy", "-disposition:v:0", "0", "-disposition:v:1", "default",
         "-disposition:a:0", "0", "-disposition:a:1", "default", str(source)],
        "muxing", source,
    )  # fmt: skip
    with av.open(str(source)) as container:  # the file is what this test means
        streams = [(s.type, bool(s.disposition & Disposition.default)) for s in container.streams]
    assert streams == [("video", False), ("video", True), ("audio", False), ("audio", True)]
    info = probe(source)
    assert (info.video_stream, info.audio_stream, info.video_streams) == (1, 3, 2)
    assert (info.width, info.height, info.packet_count, info.audio_channels) == (96, 64, 30, 1)
    extract_audio(source, "v", 44100, tmp_path / "a.wav", tmp_path / "timeline.json")
    samples, _ = soundfile.read(tmp_path / "a.wav")
    assert np.abs(samples).max() > 0.05  # the tone, not the silent first track
    assert json.loads((tmp_path / "timeline.json").read_text())["video"]["frame_count"] == 30
    frames = np.concatenate(list(read_frame_windows(source, info, 64)))
    assert frames.shape == (30, 64, 96, 3)


def test_a_cover_picture_is_never_taken_for_the_video(tmp_path):
    """An mp4 whose first video stream is an attached cover picture."""
    cover, movie = tmp_path / "cover.png", tmp_path / "movie.mp4"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "color=blue:size=300x300", "-frames:v", "1", str(cover)], "cover", cover
    )
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "12",
                "-c:v", "libx264", str(movie)], "movie", movie)  # fmt: skip
    source = tmp_path / "covered.mp4"
    run_ffmpeg(["-y", "-i", str(cover), "-i", str(movie), "-map", "0:v", "-map", "1:v", "-c:v:0", "png",
                "-c:v:1", "copy", "-disposition:v:0", "attached_pic", str(source)],
               "muxing", source)  # fmt: skip
    with av.open(str(source)) as container:  # the mp4 muxer stores the cover as the second stream
        assert [s.disposition for s in container.streams] == [Disposition.default, Disposition.attached_pic]
    info = probe(source)
    assert (info.video_stream, info.video_streams, info.width, info.packet_count) == (0, 1, 64, 12)
    only_cover = tmp_path / "only_cover.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=d=1", "-i", str(cover), "-map", "0:a", "-map", "1:v",
                "-c:a", "aac", "-c:v", "png", "-disposition:v:0", "attached_pic", str(only_cover)],
               "muxing", only_cover)  # fmt: skip
    with pytest.raises(
        AvTokensError, match=r"only_cover.mp4: not a readable video \(no video stream, only a cover"
    ):
        probe(only_cover)


def test_no_job_waits_forever_on_a_talkative_ffmpeg(tmp_path):
    """A file that makes ffmpeg log far more than a pipe holds (64 KiB) while it decodes: the
    reader drains the log as it goes, so ffmpeg never blocks on it. A file too damaged to
    decode fails with ffmpeg's reason, not with its last words."""
    good = tmp_path / "good.mp4"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "250", "-g", "250",
                "-x264-params", "slices=8", "-c:v", "libx264", str(good)], "making", good)  # fmt: skip
    source = overwrite_packets(good, range(1, 250, 2))  # half the frames refer to garbage
    assert len(ffmpeg_errors(source)) > 1 << 16
    assert sum(len(w) for w in read_frame_windows(source, probe(source), 17)) == 250
    hopeless = overwrite_packets(good, range(1, 250))
    with pytest.raises(
        AvTokensError, match=r"damaged.mp4: decoding failed: .*Decode error rate 0.9\d* exceeds"
    ):
        list(read_frame_windows(hopeless, probe(hopeless), 17))


def ffmpeg_errors(path) -> bytes:
    """What ffmpeg logs at level error while decoding `path`."""
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
                          capture_output=True, check=False).stderr  # fmt: skip


@pytest.mark.parametrize("suffix, rate", [(".mp4", "30000/1001"), (".mkv", "30000/1001"), (".mkv", "24"),
                                          (".ts", "25"), ("cut.mp4", "25")])  # fmt: skip
def test_an_intact_file_gives_exactly_its_decoded_frames(tmp_path, suffix, rate):
    """Decoding onto the constant-rate timeline changes nothing where no frame is missing:
    the frames are those ffmpeg decodes as they come (B-frames, Matroska's rounded
    timestamps, an MPEG-TS clock, a cut whose edit list drops its first 30 frames)."""
    clip = make_clip(tmp_path / f"c{suffix.removeprefix('cut')}", 64, 48, 80, rate=rate)
    if suffix.startswith("cut"):
        cut = tmp_path / "cut.mp4"
        run_ffmpeg(["-y", "-ss", "1.2", "-i", str(clip), "-c", "copy", str(cut)], "cutting", cut)
        clip = cut
    raw = run_ffmpeg(["-i", str(clip), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
                      "-pix_fmt", "rgb24", "pipe:1"], "decoding", clip)  # fmt: skip
    as_they_come = np.frombuffer(raw, np.uint8).reshape(-1, 48, 64, 3)
    info = probe(clip)
    assert info.frame_rate == Fraction(rate) and len(as_they_come) == (50 if suffix.startswith("cut") else 80)
    assert np.array_equal(np.concatenate(list(read_frame_windows(clip, info, 17))), as_they_come)

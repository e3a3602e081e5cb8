"""Probing and streaming through ffmpeg."""

from fractions import Fraction

import numpy as np
import pytest
import soundfile
from helpers import count_frames, make_clip

from avtokens import AvTokensError
from avtokens.media import VideoWriter, extract_wav, probe, read_frame_windows, run_ffmpeg


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # Matroska keeps 1 ms timestamps
@pytest.mark.parametrize("rate", ["30000/1001", "25", "24000/1001", "24", "60"])
def test_probe_reads_the_exact_frame_rate(tmp_path, rate, suffix):
    info = probe(make_clip(tmp_path / f"c{suffix}", 64, 36, 48, rate=rate))
    assert info.fps == Fraction(rate) and info.packet_count == 48
    assert not info.variable_rate and info.timing_deviation <= 0.001  # Matroska's rounding at most
    assert (info.width, info.height) == (64, 36)


def test_a_variable_frame_rate_keeps_its_mean_rate(tmp_path):
    clip = tmp_path / "vfr.mkv"
    # Frames at 0, 40, 80 ms then every 200 ms: no constant rate explains them.
    timing = "setpts='if(lt(N,3),N*0.04,0.08+(N-2)*0.2)/TB'"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=25", "-frames:v", "12", "-vf", timing,
                "-fps_mode", "vfr", str(clip)], "making a VFR clip", clip)  # fmt: skip
    info = probe(clip)
    assert info.packet_count == 12 and info.fps == Fraction(11) / Fraction("1.88")  # the mean rate
    # Frame 2 is at 80 ms; on the mean-rate timeline (5.85 fps) it sits at 342 ms.
    assert info.variable_rate and info.timing_deviation == pytest.approx(2 / info.fps - 0.08, abs=1e-3)


def test_probe_reports_audio_format_and_its_absence(tmp_path):
    with_audio = probe(make_clip(tmp_path / "a.mp4", 32, 32, 5, audio_channels=1, audio_rate=16000))
    assert with_audio.has_audio and with_audio.audio_rate == 16000 and with_audio.audio_channels == 1
    silent = probe(make_clip(tmp_path / "s.mp4", 32, 32, 5, audio_channels=None))
    assert not silent.has_audio and silent.audio_rate is None


def test_frames_stream_in_windows_with_a_short_last_one(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 48, 30, 40)
    windows = list(read_frame_windows(clip, probe(clip), 17))
    assert [len(w) for w in windows] == [17, 17, 6]
    assert windows[0].shape[1:] == (30, 48, 3) and windows[0].dtype == np.uint8


def test_writer_keeps_odd_sizes_and_the_exact_rate(tmp_path):
    path = tmp_path / "odd.mp4"
    writer = VideoWriter(path, 33, 17, Fraction(30000, 1001), crf=10, preset="ultrafast")
    writer.write(np.random.default_rng(0).integers(0, 255, (7, 17, 33, 3), dtype=np.uint8))
    writer.close()
    info = probe(path)
    assert (info.width, info.height, info.fps) == (33, 17, Fraction(30000, 1001))
    assert count_frames(path) == 7


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "file is empty"), (b"this is not a video\n" * 10, "not a readable video")],
)
def test_unreadable_files_fail_with_one_line_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(AvTokensError) as err:
        probe(path)
    assert str(path) in str(err.value) and reason in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("video_offset, audio_offset, first_sound", [("0", "0.5", 0.5), ("0.3", "0", 0.0)])
def test_extracted_audio_runs_on_the_video_clock(tmp_path, video_offset, audio_offset, first_sound):
    # One second of tone from t=0 beside two seconds of video, then one stream shifted later.
    plain = tmp_path / "plain.mp4"
    sources = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:d=2", "-f", "lavfi", "-i", "sine=f=440:d=1"]
    codecs = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"]
    run_ffmpeg(["-y", *sources, *codecs, str(plain)], "making a clip", plain)
    shifted = tmp_path / "shifted.mp4"
    inputs = ["-itsoffset", video_offset, "-i", str(plain), "-itsoffset", audio_offset, "-i", str(plain)]
    run_ffmpeg(["-y", *inputs, "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted)], "shifting", shifted)
    info = probe(shifted)
    assert info.video_start == pytest.approx(float(video_offset), abs=0.01)
    wav = tmp_path / "a.wav"
    extract_wav(shifted, wav, info, 44100)
    samples, rate = soundfile.read(wav)
    onset = np.nonzero(np.abs(samples) > 0.05)[0][0] / rate  # sample 0 is the first video frame
    assert onset == pytest.approx(first_sound, abs=0.03)
    assert len(samples) / rate == pytest.approx(1.0 + float(audio_offset) - float(video_offset), abs=0.05)

"""Probing and streaming through ffmpeg."""

import subprocess
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import soundfile
from helpers import VFR_TIMESTAMPS, count_frames, make_clip

from avtokens import AvTokensError
from avtokens.media import (
    StreamFacts,
    VideoWriter,
    choose_audio_stream,
    choose_video_stream,
    extract_wav,
    probe,
    read_frame_windows,
    run_ffmpeg,
)
from avtokens.timing import frame_places, frame_rate, video_timing


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])  # Matroska keeps 1 ms timestamps
@pytest.mark.parametrize("rate", ["30000/1001", "25", "24000/1001", "24", "60"])
def test_probe_reads_the_exact_frame_rate(tmp_path, rate, suffix):
    info = probe(make_clip(tmp_path / f"c{suffix}", 64, 36, 48, rate=rate))
    assert info.fps == Fraction(rate) and info.packet_count == 48
    assert not info.variable_rate and info.timing_deviation <= 0.001  # Matroska's rounding at most
    assert (info.width, info.height) == (64, 36)


def test_a_variable_frame_rate_keeps_its_mean_rate(tmp_path):
    clip = tmp_path / "vfr.mkv"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=25", "-frames:v", "12",
                "-vf", VFR_TIMESTAMPS, "-fps_mode", "vfr", str(clip)], "making a VFR clip", clip)  # fmt: skip
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


def test_frames_of_another_size_than_expected_are_an_error(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 48, 30, 40)
    with pytest.raises(AvTokensError, match=r"c.mp4: its frames are not 50x30"):
        list(read_frame_windows(clip, replace(probe(clip), width=50), 17))


def test_writer_keeps_odd_sizes_and_the_exact_rate(tmp_path):
    path = tmp_path / "odd.mp4"
    writer = VideoWriter(path, 33, 17, Fraction(30000, 1001), crf=10, preset="ultrafast")
    writer.write(np.random.default_rng(0).integers(0, 255, (7, 17, 33, 3), dtype=np.uint8))
    writer.close()
    info = probe(path)
    assert (info.width, info.height, info.fps) == (33, 17, Fraction(30000, 1001))
    assert count_frames(path) == 7


def test_ffmpeg_decodes_and_filters_on_the_threads_it_is_given(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "c.mp4", 48, 30, 5)
    commands, popen = [], subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, **kw: commands.append(cmd) or popen(cmd, **kw))
    assert [len(w) for w in read_frame_windows(clip, probe(clip), 5, threads=3)] == [5]
    (command,) = commands
    assert command[command.index("-threads") + 1] == "3" and command.index("-threads") < command.index("-i")
    assert command[command.index("-filter_threads") + 1] == "3"


def test_an_mp4_is_encoded_on_the_threads_it_is_given_and_the_same_every_time(tmp_path):
    """x264's threaded lookahead made 4 of 15 encodes of one clip at 2 threads differ (README,
    Determinism); the writer runs it in the encoding thread."""
    raw = run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "30", "-f", "rawvideo",
                      "-pix_fmt", "rgb24", "pipe:1"], "rendering", "testsrc2")  # fmt: skip
    made = []
    for path in (tmp_path / "a.mp4", tmp_path / "b.mp4"):
        with VideoWriter(path, 64, 48, Fraction(25), crf=12, preset="medium", threads=2) as writer:
            writer.write(np.frombuffer(raw, np.uint8).reshape(30, 48, 64, 3))
        made.append(path.read_bytes())
    assert made[0] == made[1]
    assert b" threads=2 " in made[0]  # x264's settings, as it writes them into the stream


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
    decoded, placement = extract_wav(shifted, wav, info, 44100)
    assert decoded == (50, 0, 0) and placement.format_changes == 0
    samples, rate = soundfile.read(wav)
    onset = np.nonzero(np.abs(samples) > 0.05)[0][0] / rate  # sample 0 is the first video frame
    assert onset == pytest.approx(first_sound, abs=0.03)
    # As long as the video (silence after the tone), or as the audio where it goes on longer.
    audio_end = 1.0 + float(audio_offset) - float(video_offset)
    assert len(samples) / rate == pytest.approx(max(audio_end, info.duration), abs=0.05)


# The probe's timing arithmetic (avtokens.timing) on timestamps as containers store them,
# without ffmpeg. Figures are worked out from the definitions: the mean rate is the frame
# intervals over the time from the first to the last timestamp.

MS = Fraction(1, 1000)  # Matroska's time base


def ticks(rate, frames, time_base):
    """Each frame's exact start, rounded to the time base's ticks as a muxer stores it."""
    return [round(i / Fraction(rate) / time_base) for i in range(frames)]


@pytest.mark.parametrize(
    "rate, time_base, first_duration",
    [
        ("30000/1001", Fraction(1, 30000), 1001),  # mp4: every frame a whole number of ticks
        ("25", Fraction(1, 12800), 512),
        ("30000/1001", MS, 33),  # Matroska: 29.97 fps reads as 29.9745 over 48 frames
        ("24", MS, 42),
        ("24000/1001", MS, 42),
        ("60", MS, 17),
    ],
)
def test_regular_timestamps_give_the_exact_rate(rate, time_base, first_duration):
    pts = ticks(rate, 48, time_base)
    timing = video_timing(pts, first_duration, time_base, "12")  # the header's 12 fps: unused
    assert timing.fps == Fraction(rate) and timing.packet_count == 48
    assert timing.duration == pytest.approx(48 / float(Fraction(rate)), rel=1e-12)
    assert timing.start == 0.0
    # Rounding to ticks moves a frame by half a tick at most: that is all the deviation.
    if 1 / (Fraction(rate) * time_base) == first_duration:  # a frame is a whole number of ticks
        assert timing.deviation == 0
    else:
        assert 0 < timing.deviation <= float(time_base / 2)
    assert not timing.variable_rate


def test_frames_in_decode_order_and_a_late_first_frame():
    # H.264 with B-frames in mp4: packets come in decode order; the first shows at 2 frames.
    shown = [1001 * (i + 2) for i in range(9)]
    decode_order = [shown[i] for i in (0, 3, 1, 2, 6, 4, 5, 8, 7)]
    timing = video_timing(decode_order, 1001, Fraction(1, 30000), None)
    assert timing.fps == Fraction(30000, 1001) and timing.packet_count == 9
    assert timing.start == pytest.approx(2002 / 30000, abs=1e-12)  # 66.7 ms
    assert timing.deviation == 0.0
    assert timing.duration == pytest.approx(9 * 1001 / 30000, rel=1e-12)


def test_a_variable_rate_keeps_its_mean_and_reports_its_deviation_to_the_microsecond():
    # Frames at 0, 40, 80 ms, then every 200 ms: 11 intervals over 1.88 s.
    pts = [0, 40, 80] + [80 + 200 * k for k in range(1, 10)]
    timing = video_timing(pts, 40, MS, "25")
    assert timing.fps == Fraction(11 * 1000, 1880) == Fraction(275, 47)
    # Frame 2 (80 ms) sits at 2 / (275/47) = 94/275 s on that timeline: 72/275 s = 0.2618181...
    assert timing.deviation == 0.261818 and timing.variable_rate
    assert timing.duration == pytest.approx(12 * 47 / 275, rel=1e-12) and timing.start == 0.0


@pytest.mark.parametrize("pts", [[0, 0, 200], [0, 200, 200], [0, 0, 100, 200]])
def test_the_rate_runs_from_the_first_to_the_last_timestamp_whatever_lies_between(pts):
    # Repeated timestamps: (n - 1) intervals over 200 ms, not the first packet's 40 ms.
    timing = video_timing(pts, 40, MS, None)
    assert timing.fps == Fraction(len(pts) - 1, 1) / Fraction(200, 1000)


@pytest.mark.parametrize(
    "first_duration, time_base, rate",
    [
        (1001, Fraction(1, 30000), Fraction(30000, 1001)),
        (1, Fraction(1, 25), Fraction(25)),  # a time base of one frame
        (41, MS, Fraction(24)),  # 24 fps frames last 41 or 42 ms in Matroska: 2/3 of a tick off
    ],
)
def test_a_single_frame_takes_its_rate_from_its_duration(first_duration, time_base, rate):
    timing = video_timing([3 * first_duration], first_duration, time_base, "50")
    assert timing.fps == rate and timing.packet_count == 1
    assert timing.duration == pytest.approx(1 / float(rate), rel=1e-12)
    assert timing.start == pytest.approx(float(3 * first_duration * time_base), rel=1e-12)
    assert timing.deviation == 0.0
    # All timestamps equal (no interval to measure): the same, from the first packet's duration.
    assert video_timing([7, 7, 7], first_duration, time_base, "50").fps == rate


def test_without_a_time_base_or_a_duration_the_stated_rate_or_25():
    assert video_timing([0, 1, 2], 1, None, "12.5") == (Fraction(25, 2), 3, 0.24, 0.0, 0.0)
    assert video_timing([0, 1, 2], 1, None, None) == (Fraction(25), 3, 0.12, 0.0, 0.0)
    # A frame that lasts no time says nothing about the rate.
    one = video_timing([500], 0, MS, "30")
    assert one.fps == 30 and one.duration == pytest.approx(1 / 30)
    assert one.start == 0.5 and one.deviation == 0.0
    assert video_timing([500], 0, MS, None).fps == 25
    with pytest.raises(ValueError, match="^no timestamps$"):
        video_timing([], 0, MS, None)


def test_the_nearest_usual_rate_is_taken_when_it_explains_the_stream_to_one_tick():
    tick = Fraction(1, 90000)  # MPEG-TS
    # One interval of 3601 ticks: 25 fps (3600 ticks) is one tick off, so it explains it...
    assert frame_rate(1 / (3601 * tick), 1, tick) == 25
    # ...but not two ticks off: the measured mean stays (to a denominator of at most 1001).
    kept = frame_rate(1 / (3602 * tick), 1, tick)
    assert kept != 25 and kept.denominator <= 1001 and abs(kept - Fraction(90000, 3602)) < 1e-5


@pytest.mark.parametrize(
    "rate",
    [
        Fraction(1, 4),
        Fraction(1, 2),
        Fraction(1000, 1001),
        Fraction(1),
        Fraction(12),
        Fraction(1_000_000, 1001),
        Fraction(1000),
    ],
)
def test_exact_rates_from_slideshows_to_high_speed_capture_are_kept(rate):
    # One frame every 4 s, every 2 s, about every second (1 and its 1000/1001 variant); 1000 fps
    # and its 1000/1001 variant.
    time_base = 1 / rate / 10
    pts = [10 * i for i in range(30)]
    assert frame_rate(Fraction(29) / ((pts[-1] - pts[0]) * time_base), 29, time_base) == rate
    assert video_timing(pts, 10, time_base, None).fps == rate


def test_frames_missing_from_a_constant_rate_keep_their_places():
    # 25 fps in MPEG-TS ticks (3600 a frame), frames 3 and 4 lost: still 25 fps, 10 frames long.
    pts = [3600 * i for i in range(10) if i not in (3, 4)]
    timing = video_timing(pts, 3600, Fraction(1, 90000), None)
    assert (timing.fps, timing.packet_count, timing.deviation) == (25, 8, 0.0)
    assert timing.duration == 0.4 and not timing.variable_rate  # 10 frames


def test_missing_frames_keep_the_rate_of_the_frames_around_them():
    # Frames every 40.1 ms in Matroska's milliseconds (24.94 fps, not 25), frames 50 and 51 lost:
    # 99 frame intervals over the span, so 25 fps is 10 ms off at the end: the measured rate stays.
    pts = [round(k * 40.1) for k in range(100) if k not in (50, 51)]
    timing = video_timing(pts, 40, MS, "25")
    assert timing.fps != 25 and float(timing.fps) == pytest.approx(1000 / 40.1, abs=1e-3)
    assert timing.duration == pytest.approx(100 / float(timing.fps)) and not timing.variable_rate
    # A time base of one frame: the typical interval is a single tick.
    assert frame_places([0, 1, 2, 4]) == [0, 1, 2, 4]
    # A quarter of an interval off a whole number of frames is still on the timeline.
    assert frame_places([0, 4, 8, 13, 21]) == [0, 1, 2, 3, 5]


def test_missing_frames_are_told_from_a_variable_rate():
    # Matroska's millisecond rounding of 30 fps with the frame at 133 ms lost.
    assert frame_places([0, 33, 67, 100, 167]) == [0, 1, 2, 3, 5]
    # Frames at 0, 40, 80 ms, then every 200 ms: the typical interval (200) does not explain 40.
    assert frame_places([0, 40, 80] + [80 + 200 * k for k in range(1, 10)]) is None
    assert frame_places([0, 1000, 2000]) is None  # nothing missing
    assert frame_places([0, 0, 200]) is None  # repeated timestamps: no interval to go by
    assert frame_places([0, 1000, 2600]) is None  # 1.6 intervals: not a whole number of frames


def test_packets_without_timestamps_take_the_stated_rate():
    # An MPEG program stream: 10 packets at 25 fps, only every third one with a timestamp.
    timing = video_timing([3600 * i for i in (0, 3, 6, 9)], 3600, Fraction(1, 90000), Fraction(25), 10)
    assert (timing.fps, timing.packet_count, timing.deviation, timing.duration) == (25, 10, 0.0, 0.4)
    # A timestamp a third of a frame (1200 ticks, 13.3 ms) off that rate's timeline.
    off = video_timing([0, 3600 * 3 + 1200], 3600, Fraction(1, 90000), "25", packet_count=5)
    assert off.deviation == 0.013333 and not off.variable_rate
    # An MPEG clock that starts at 1.4 s, at the header's 29.97 fps (3003 ticks a frame).
    later = video_timing(
        [126000 + 3003 * i for i in (0, 2, 5)], 3003, Fraction(1, 90000), Fraction(30000, 1001), 6
    )
    assert (later.fps, later.start, later.deviation) == (Fraction(30000, 1001), 1.4, 0.0)


def test_the_streams_a_player_would_choose():
    def chosen(choose, *streams):
        pick = choose([StreamFacts(i, *facts) for i, facts in enumerate(streams)])
        return None if pick is None else pick.index

    # (default, cover, packets) per stream
    assert chosen(choose_video_stream, (False, False, 1), (True, False, 300)) == 1  # a still before the video
    assert chosen(choose_video_stream, (False, False, 300), (True, False, 200)) == 1  # default first
    assert chosen(choose_video_stream, (True, False, 1), (True, False, 300)) == 1  # then the most frames
    assert chosen(choose_video_stream, (True, True, 900), (False, False, 30)) == 1  # never a cover
    assert chosen(choose_video_stream, (True, False, 30), (True, False, 30)) == 0  # then the first
    assert chosen(choose_video_stream, (True, True, 1)) is None
    assert chosen(choose_audio_stream, (False, False, 0), (True, False, 0)) == 1
    assert chosen(choose_audio_stream, (False, False, 0), (False, False, 0)) == 0
    assert chosen(choose_audio_stream) is None

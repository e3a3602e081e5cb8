"""Real-world inputs: broken ones fail with one clear line while the others finish and
nothing is half-written; awkward ones tokenize and reconstruct correctly."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, VFR_TIMESTAMPS, after_the_progress, count_frames, make_clip, run_workflow

from avtokens import load_tokens
from avtokens.audio import encode_wav_files
from avtokens.audio_tokens import align_codes
from avtokens.media import extract_audio, ffmpeg_exe, probe, run_ffmpeg
from avtokens.presets import make_preset
from avtokens.visual import decode_token_file, encode_video_file


@pytest.mark.workflow
def test_broken_inputs_fail_clearly_while_the_good_video_finishes(tmp_path):
    good = make_clip(tmp_path / "good.mp4", 48, 32, 9, rate="25")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    whole = make_clip(tmp_path / "whole.mp4", 64, 48, 50, rate="25")
    truncated = tmp_path / "truncated.mp4"  # the index (moov) sits at the end: cut off
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    audio_only = tmp_path / "audio_only.mp4"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "sine=r=16000:d=1", "-c:a", "aac", str(audio_only)], "making", audio_only
    )
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    missing = tmp_path / "missing.mp4"
    locked = make_clip(tmp_path / "locked.mp4", 32, 32, 2)
    locked.chmod(0o000)
    bad = {"empty": empty, "text": text, "truncated": truncated, "audio_only": audio_only,
           "folder": folder, "missing": missing, "locked": locked}  # fmt: skip
    sheet = tmp_path / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in {"good": good, **bad}.items()))
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["p"],
    }
    # The run keeps going (the default profile); root runs it as a user file permissions bind.
    proc = run_workflow(tmp_path / "w", overlay, check=False, prefix=without_root_bypass())
    assert proc.returncode != 0
    text_out = proc.stdout + proc.stderr
    results = tmp_path / "w" / "results"
    assert (results / "p" / "reconstructed" / "good_combined.mp4").is_file()
    reasons = {"empty": "file is empty", "text": "not a readable video",
               "truncated": "not a readable video", "audio_only": "not a readable video (no video stream)",
               "folder": "is a folder, not a video file", "missing": "no such file",
               "locked": "cannot be read (Permission denied)"}  # fmt: skip
    for name, path in bad.items():
        lines = [line for line in text_out.splitlines() if line.startswith("ERROR") and f"{path}: " in line]
        assert lines and all(reasons[name] in line for line in lines), (name, lines)
        if reasons[name] == "not a readable video":  # with ffmpeg's own reason in brackets
            readable = r"not a readable video \(\S.*\)(\. Fix or|$)"
            assert all(re.search(readable, line) for line in lines), lines
        left = [p for p in results.rglob(f"{name}*") if p.suffix != ".log"]
        assert left == [], left  # no output that a later run could take for finished
    # Each failed video is named, with the fix, in the run's last lines (once: as it failed, if no
    # step was done after it, or again at the end).
    end = after_the_progress(proc.stderr)
    for name, path in bad.items():
        if name not in ("missing", "locked"):
            failed = f"ERROR video {name}: {path}: {reasons[name]}"
            said = [line for line in end if line.startswith(failed)]
            fix = "Fix or replace the file, or remove its row from the sheet, and run again"
            assert len(said) == 1 and said[0].endswith(fix), end
    assert not [p for p in results.rglob("*partial*")]
    # The two that Snakemake could not even read as inputs are left out when the run starts.
    for path, reason in ((missing, "no such file"), (locked, "cannot be read (Permission denied)")):
        name = path.stem
        assert f"ERROR {path}: {reason} (video {name} of {sheet}); left out" in text_out
    left_out = f"2 video(s) of {sheet} do not exist or cannot be read and were left out: {missing}, {locked}"
    assert left_out in text_out


def test_a_sheet_without_one_usable_video_is_refused_before_any_job(tmp_path):
    sheet = tmp_path / "videos.tsv"
    sheet.write_text(f"name\tpath\ngone\t{tmp_path / 'gone.mp4'}\n")
    overlay = {"videos": str(sheet), "weights": "demo"}
    proc = run_workflow(tmp_path / "w", overlay, "--dry-run", check=False)
    assert proc.returncode != 0
    assert f"{sheet}: none of the listed videos exists and can be read" in proc.stdout + proc.stderr


def without_root_bypass() -> tuple[str, ...]:
    """A command prefix under which file permissions hold: root reads everything, so as root
    the command runs without the capabilities that bypass them (files stay readable to their
    owner)."""
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search") if os.geteuid() == 0 else ()


def test_an_unreadable_file_fails_with_permission_denied(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="avtokens-perm-"))
    try:
        video = make_clip(folder / "locked.mp4", 32, 32, 2)
        folder.chmod(0o755)
        video.chmod(0o000)
        check = [sys.executable, "-c", "import sys, avtokens.media as m; m.probe(sys.argv[1])", video]
        proc = subprocess.run([*without_root_bypass(), *check], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode != 0
        assert f"{video}: cannot be read (Permission denied)" in proc.stderr
    finally:
        shutil.rmtree(folder)


AWKWARD = {
    # name: (ffmpeg output options, container suffix, expected decoded size[, frames of the timeline])
    "10-bit 4:2:2": (["-c:v", "libx264", "-pix_fmt", "yuv422p10le"], ".mp4", (64, 48)),
    "matroska vp9": (["-c:v", "libvpx-vp9", "-deadline", "realtime"], ".mkv", (64, 48)),
    # This AVI muxer shows the first frame for three frame times (the next one is stamped 3/24 s):
    # 20 pictures on a timeline of 22 frames at 24 fps, as a player shows them.
    "avi mpeg4": (["-c:v", "mpeg4"], ".avi", (64, 48), 22),
    "rotated phone": (
        ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-display_rotation", "90"],
        ".mp4",
        (48, 64),
    ),
}


@pytest.mark.parametrize("case", AWKWARD)
def test_awkward_but_valid_videos_tokenize_and_reconstruct_exactly(tmp_path, demo_weights, case):
    options, suffix, (width, height), *timeline = AWKWARD[case]
    frames = timeline[0] if timeline else 20
    source = tmp_path / f"in{suffix}"
    rotation = options[-2:] if "-display_rotation" in options else []
    codec = [o for o in options if o not in rotation]
    plain = tmp_path / f"plain{suffix}"
    inputs = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=24", "-f", "lavfi", "-i", "sine=r=22050:d=0.5"]
    run_ffmpeg(["-y", *inputs, "-frames:v", "20", *codec, str(plain)], "making a clip", plain)
    if rotation:  # display rotation is container metadata, set while copying the streams
        run_ffmpeg(["-y", *rotation, "-i", str(plain), "-c", "copy", str(source)], "rotating", source)
    else:
        plain.rename(source)
    preset = make_preset("p", {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17, "weights": "demo"})
    folder = demo_weights / preset.model
    tokens, video, metrics = tmp_path / "t.safetensors", tmp_path / "rec.mp4", tmp_path / "frames.tsv"
    encode_video_file(source, tokens, preset, folder, "cpu", 2, "v")
    decode_token_file(tokens, video, preset, folder, "cpu", 2, 18, "ultrafast", source, metrics)
    meta = load_tokens(tokens).metadata["video"]
    assert (meta["width"], meta["height"], meta["frame_count"]) == (width, height, frames)
    assert meta["filled_frames"] == frames - 20 and not meta["variable_rate"]
    info = probe(video)
    assert (info.width, info.height, info.fps) == (width, height, 24) and count_frames(video) == frames
    audio = load_tokens(code_and_align_audio(source, tokens, tmp_path, demo_weights))
    # 0.5 s of audio under ~0.8 s of video: the codes still cover every latent frame, up to the
    # first 512-sample code frame that starts at or after the video's end: 20/24 s x 44,100 / 512
    # = 71.8, 22/24 s: 79.0 (rounded up).
    assert audio["code_ranges"][-1, 1] == audio["codes"].shape[1] == {20: 72, 22: 79}[frames]


def code_and_align_audio(source, visual_tokens, folder, demo_weights):
    """The workflow's audio steps for one video and preset; the audio token file's path."""
    wav, timeline = folder / "a.wav", folder / "timeline.json"
    codes, audio_tokens = folder / "codes.safetensors", folder / "a.safetensors"
    extract_audio(source, "v", 44100, wav, timeline)
    encode_wav_files([(wav, timeline, codes)], "dac", 9, demo_weights / "dac", "cpu", 60)
    align_codes(codes, visual_tokens, audio_tokens)
    return audio_tokens


def test_a_cut_whose_edit_list_drops_frames_gets_codes_for_the_decoded_frames(tmp_path, demo_weights):
    """A stream-copied cut keeps the packets back to the keyframe and an edit list that
    drops them when decoding: 75 packets, 45 frames. The audio must follow the 45."""
    whole = make_clip(tmp_path / "whole.mp4", 64, 48, 75, rate="25", audio_channels=1)
    source = tmp_path / "cut.mp4"
    run_ffmpeg(["-y", "-ss", "1.2", "-i", str(whole), "-c", "copy", str(source)], "cutting", source)
    assert probe(source).packet_count == 75 and count_frames(source) == 45
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "weights": "demo"})
    folder = demo_weights / preset.model
    tokens = tmp_path / "t.safetensors"
    encode_video_file(source, tokens, preset, folder, "cpu", 2, "v")
    audio = load_tokens(code_and_align_audio(source, tokens, tmp_path, demo_weights))
    assert (
        audio.metadata["alignment"]["frame_count"]
        == load_tokens(tokens).metadata["video"]["frame_count"]
        == 45
    )
    assert audio["codes"].shape[1] == audio["code_ranges"][-1, 1] == 156  # 1.8 s x 44,100 / 512 = 155.0 (up)


# Sources for one workflow run: name -> (ffmpeg arguments after the inputs, suffix, frames, codec).
# Test pattern 67x45 (odd) or 64x48 at 25 fps with a tone, unless the arguments say otherwise.
WORKFLOW_INPUTS = {
    "webm_av1": (["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8", "-c:a", "libopus"],
                 ".webm", 20, "av1"),
    "mov_hevc": (["-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1", "-c:a", "aac"],
                 ".mov", 20, "hevc"),
    "odd_444": (["-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac"], ".mp4", 20, "h264"),
    "one_frame": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"], ".mp4", 1, "h264"),
    "vfr": (["-vf", VFR_TIMESTAMPS, "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p",
             "-c:a", "aac"], ".mp4", 14, "h264"),
    "surround": (["-ac", "6", "-ar", "8000", "-c:v", "libx264", "-c:a", "aac"], ".mp4", 30, "h264"),
    "mono96k": (["-ac", "1", "-ar", "96000", "-c:v", "libx264", "-c:a", "aac"], ".mp4", 30, "h264"),
    "silent": (["-an", "-c:v", "libx264"], ".mp4", 30, "h264"),
    "long_audio": (["-c:v", "libx264", "-c:a", "flac"], ".mkv", 30, "h264"),  # 4 s of audio, 1.2 s of video
    "phone_4k": (["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"], ".mp4", 15, "h264"),
}  # fmt: skip
SIZES = {"odd_444": "67x45", "phone_4k": "3840x2160"}  # else 64x48
# Latent frames by frame count, worked out by hand for windows of 17 frames at 8x: a full window
# gives 1 + 16/8 = 3; a last one of n frames, padded to 1 + 8k, gives 1 + ceil((n - 1) / 8).
LATENT_FRAMES = {1: 1, 14: 1 + 2, 15: 1 + 2, 20: 3 + 2, 30: 3 + 3}


@pytest.fixture(scope="module")
def inputs_run(tmp_path_factory):
    """The workflow on every kind of source above (one run, shared by the tests that read it)."""
    folder = tmp_path_factory.mktemp("inputs")
    sources = {}
    for name, (args, suffix, frames, _) in WORKFLOW_INPUTS.items():
        size = SIZES.get(name, "64x48")
        tone = "sine=f=440:r=48000:duration=4" if name == "long_audio" else "sine=f=330:r=48000"
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-f", "lavfi", "-i", tone]
        length = ["-shortest"] if name != "long_audio" else []
        source = sources[name] = folder / f"{name}{suffix}"
        run_ffmpeg(["-y", *inputs, "-frames:v", str(frames), *length, *args, str(source)], "making", source)
    sheet = folder / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in sources.items()))
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["p"],
        "shard_size": len(sources),  # one shard: each model loaded once, awkward inputs one after another
        "device": "cpu",  # the 4K clip: on a machine without a GPU
    }
    run_workflow(folder / "w", overlay)
    return folder / "w" / "results", sources


def stream_codec(path: Path) -> str:
    """The video codec as ffmpeg names it, read from its own stream summary."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return re.search(r"Video: (\w+)", proc.stderr).group(1)


@pytest.mark.parametrize("name", WORKFLOW_INPUTS)
def test_every_container_codec_and_size_runs_through_the_workflow(inputs_run, name):
    results, sources = inputs_run
    source, (_, _, frames, codec) = sources[name], WORKFLOW_INPUTS[name]
    assert stream_codec(source) == codec and count_frames(source) == frames  # the input is what we meant
    original = probe(source)
    visual = load_tokens(results / "p" / "tokens" / f"{name}_visual_tokens.safetensors")
    meta = visual.metadata["video"]
    assert (meta["width"], meta["height"], meta["frame_count"]) == (original.width, original.height, frames)
    assert visual["indices"].shape[1] == LATENT_FRAMES[frames]
    with open(results / "p" / "metrics" / f"{name}_frames.tsv") as table:
        assert len(table.readlines()) == 1 + frames  # every frame scored
    for video in ("visual", "combined"):  # the source's exact size, rate and frames
        reconstruction = results / "p" / "reconstructed" / f"{name}_{video}.mp4"
        info = probe(reconstruction)
        assert (info.width, info.height, info.fps) == (original.width, original.height, original.fps)
        assert count_frames(reconstruction) == frames, video
    assert info.has_audio and abs(info.duration - frames / original.fps) < 0.1  # the combined one


def test_a_variable_frame_rate_runs_on_its_mean_rate_timeline(inputs_run):
    """14 frames over 2.28 s: every frame kept, at the mean rate, with the deviation recorded."""
    results, sources = inputs_run
    meta = load_tokens(results / "p" / "tokens" / "vfr_visual_tokens.safetensors").metadata["video"]
    mean = Fraction(13) / Fraction("2.28")  # 13 intervals
    assert meta["variable_rate"] and Fraction(meta["fps"]) == mean
    # Frame 2 is at 80 ms; on the mean-rate timeline it sits at 2 / mean s.
    assert meta["timing_deviation"] == pytest.approx(float(2 / mean) - 0.08, abs=1e-3)
    audio = load_tokens(results / "p" / "tokens" / "vfr_audio_tokens.safetensors")
    assert audio["codes"].shape[1] == 212  # 14 frames at 13/2.28 fps: 2.455 s x 44,100 / 512 = 211.5 (up)
    recon = probe(results / "p" / "reconstructed" / "vfr_visual.mp4")
    assert not recon.variable_rate and recon.duration == pytest.approx(float(14 / mean), abs=0.01)


def test_every_audio_layout_gives_codes_for_every_latent_frame(inputs_run):
    """5.1, mono at 96 kHz (resampled, mono), audio longer than the video and none at all."""
    results, sources = inputs_run
    expected = {"surround": (6, 8000), "mono96k": (1, 96000), "silent": (None, None),
                "long_audio": (1, 48000)}  # fmt: skip
    for name, (channels, rate) in expected.items():
        frames = count_frames(sources[name])
        audio = load_tokens(results / "p" / "tokens" / f"{name}_audio_tokens.safetensors")
        codes, ranges, meta = audio["codes"], audio["code_ranges"], audio.metadata["audio"]
        assert codes.shape[1] == 104, name  # 30 frames at 25 fps: 1.2 s x 44,100 / 512 = 103.4 (up)
        assert ranges[0, 0] == 0 and ranges[-1, 1] == codes.shape[1], name
        assert (meta["has_audio"], meta["source_channels"], meta["source_rate"]) == (
            channels is not None, channels, rate), name  # fmt: skip
        combined = results / "p" / "reconstructed" / f"{name}_combined.mp4"
        info = probe(combined)
        assert info.has_audio and info.audio_rate == 44100 and count_frames(combined) == frames
        # The muxed audio ends with the video: a longer source track is cut, not carried over.
        assert abs(info.duration - frames / 25) < 0.1, (name, info.duration)
    with wave.open(str(results / "audio" / "44100hz" / "silent.wav")) as wav:
        silence = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert len(silence) == round(30 / 25 * 44100) and not silence.any()


def test_a_4k_clip_on_a_machine_without_a_gpu_stays_within_4_gb(inputs_run):
    """Every job's own peak resident memory (which each job logs), the 4K clip's jobs among
    them: frames are converted, scored and read ahead a few at a time, not a window at once."""
    results, _ = inputs_run
    peaks = {log.name: int(peak) for log in (results / "logs").rglob("*.log")
             for peak in re.findall(r"peak memory: (\d+) MiB", log.read_text())}  # fmt: skip
    assert len(peaks) >= 12 and max(peaks.values()) <= 4096, peaks
    video = load_tokens(results / "p" / "tokens" / "phone_4k_visual_tokens.safetensors").metadata["video"]
    assert (video["width"], video["height"], video["frame_count"]) == (3840, 2160, 15)

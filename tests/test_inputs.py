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
from helpers import REPO, count_frames, make_clip, run_workflow

from avtokens import load_tokens
from avtokens.alignment import code_frame_count
from avtokens.audio import SAMPLE_RATE, align_codes, encode_wav_files, extract_audio
from avtokens.media import probe, run_ffmpeg
from avtokens.presets import DAC_WEIGHTS_FILE, make_preset
from avtokens.visual import decode_token_file, encode_video_file


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
    bad = {"empty": empty, "text": text, "truncated": truncated, "audio_only": audio_only,
           "folder": folder, "missing": missing}  # fmt: skip
    sheet = tmp_path / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in {"good": good, **bad}.items()))
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["p"],
    }
    proc = run_workflow(tmp_path / "w", overlay, check=False)  # the profile keeps going
    assert proc.returncode != 0
    text_out = proc.stdout + proc.stderr
    results = tmp_path / "w" / "results"
    assert (results / "p" / "reconstructed" / "good_combined.mp4").is_file()
    reasons = {"empty": "file is empty", "text": "not a readable video",
               "truncated": "not a readable video", "audio_only": "no video stream",
               "folder": "is a folder", "missing": "no such file"}  # fmt: skip
    for name, path in bad.items():
        lines = [line for line in text_out.splitlines() if f"ERROR {path}: " in line]
        assert lines and all(reasons[name] in line for line in lines), (name, lines)
        if reasons[name] == "not a readable video":  # with ffmpeg's own reason in brackets
            assert all(re.search(r"not a readable video \(\S.*\)$", line.strip()) for line in lines), lines
        left = [p for p in results.rglob(f"{name}*") if p.suffix != ".log"]
        assert left == [], left  # no output that a later run could take for finished
    assert not [p for p in results.rglob("*partial*")]
    assert f"1 video(s) of {sheet} do not exist and were left out: {missing}" in text_out


def test_an_unreadable_file_fails_with_permission_denied(tmp_path):
    """Run as a user who may not read the file (root reads everything, so the check
    drops the permission-bypassing capabilities when the tests run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="avtokens-perm-"))
    try:
        video = make_clip(folder / "locked.mp4", 32, 32, 2)
        folder.chmod(0o755)
        video.chmod(0o000)
        check = [sys.executable, "-c", "import sys, avtokens.media as m; m.probe(sys.argv[1])", video]
        if os.geteuid() == 0:
            # root without the capabilities that bypass file permissions (the repo, wherever
            # it lies, stays readable to its owner)
            check = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *check]
        proc = subprocess.run(check, capture_output=True, text=True, cwd=REPO)
        assert proc.returncode != 0
        assert f"{video}: cannot be read (Permission denied)" in proc.stderr
    finally:
        shutil.rmtree(folder)


AWKWARD = {
    # name: (ffmpeg output options, container suffix, expected decoded size)
    "10-bit 4:2:2": (["-c:v", "libx264", "-pix_fmt", "yuv422p10le"], ".mp4", (64, 48)),
    "matroska vp9": (["-c:v", "libvpx-vp9", "-deadline", "realtime"], ".mkv", (64, 48)),
    "avi mpeg4": (["-c:v", "mpeg4"], ".avi", (64, 48)),
    "rotated phone": (
        ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-display_rotation", "90"],
        ".mp4",
        (48, 64),
    ),
}


@pytest.mark.parametrize("case", AWKWARD)
def test_awkward_but_valid_videos_tokenize_and_reconstruct_exactly(tmp_path, demo_weights, case):
    options, suffix, (width, height) = AWKWARD[case]
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
    encode_video_file(source, tokens, preset, folder / "encoder.jit", folder / "decoder.jit", "cpu", 2, "v")
    decode_token_file(
        tokens, video, preset, folder / "decoder.jit", "cpu", 2, 18, "ultrafast", source, metrics
    )
    meta = load_tokens(tokens).metadata["video"]
    assert (meta["width"], meta["height"], meta["frame_count"]) == (width, height, 20)
    info, original = probe(video), probe(source)
    # The source's own rate: 24 fps, except where its timestamps say otherwise (this AVI
    # muxer leaves a two-frame gap after the first frame; the mean rate keeps the duration).
    assert (info.width, info.height, info.fps) == (width, height, original.fps) and count_frames(video) == 20
    audio = load_tokens(code_and_align_audio(source, tokens, tmp_path, demo_weights))
    # 0.5 s of audio under ~0.8 s of video: the codes still cover every latent frame.
    assert (
        audio["code_ranges"][-1, 1]
        == audio["codes"].shape[1]
        == code_frame_count(20, original.fps, SAMPLE_RATE, 512)
    )


def code_and_align_audio(source, visual_tokens, folder, demo_weights):
    """The workflow's audio steps for one video and preset; the audio token file's path."""
    wav, timeline = folder / "a.wav", folder / "timeline.json"
    codes, audio_tokens = folder / "codes.safetensors", folder / "a.safetensors"
    extract_audio(source, "v", wav, timeline)
    encode_wav_files([(wav, timeline, codes)], demo_weights / "dac" / DAC_WEIGHTS_FILE, "cpu", 60)
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
    encode_video_file(source, tokens, preset, folder / "encoder.jit", folder / "decoder.jit", "cpu", 2, "v")
    audio = load_tokens(code_and_align_audio(source, tokens, tmp_path, demo_weights))
    assert (
        audio.metadata["alignment"]["frame_count"]
        == load_tokens(tokens).metadata["video"]["frame_count"]
        == 45
    )
    assert (
        audio["codes"].shape[1]
        == audio["code_ranges"][-1, 1]
        == code_frame_count(45, Fraction(25), SAMPLE_RATE, 512)
    )


def test_every_audio_layout_gives_codes_for_every_latent_frame(tmp_path):
    """5.1, mono at 96 kHz, audio longer than the video and none at all, through the workflow."""
    clips = {
        "surround": make_clip(
            tmp_path / "surround.mp4", 64, 48, 30, rate="25", audio_channels=6, audio_rate=8000
        ),  # fmt: skip
        "mono96k": make_clip(
            tmp_path / "mono96k.mp4", 64, 48, 30, rate="25", audio_channels=1, audio_rate=96000
        ),  # fmt: skip
        "silent": make_clip(tmp_path / "silent.mp4", 64, 48, 30, rate="25", audio_channels=None),
    }
    long_audio = clips["long_audio"] = tmp_path / "long_audio.mkv"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1.2", "-f", "lavfi",
                "-i", "sine=f=440:r=44100:duration=4", "-c:v", "libx264", "-c:a", "flac", str(long_audio)],
               "making a clip", long_audio)  # fmt: skip
    sheet = tmp_path / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in clips.items()))
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["p"],
    }
    results = tmp_path / "w" / "results"
    run_workflow(tmp_path / "w", overlay)
    expected = {"surround": (6, 8000), "mono96k": (1, 96000), "silent": (None, None),
                "long_audio": (1, 44100)}  # fmt: skip
    for name, (channels, rate) in expected.items():
        frames = count_frames(clips[name])
        audio = load_tokens(results / "p" / "tokens" / f"{name}_audio_tokens.safetensors")
        codes, ranges, meta = audio["codes"], audio["code_ranges"], audio.metadata["audio"]
        assert codes.shape[1] == code_frame_count(frames, Fraction(25), SAMPLE_RATE, 512), name
        assert ranges[0, 0] == 0 and ranges[-1, 1] == codes.shape[1], name
        assert (meta["has_audio"], meta["source_channels"], meta["source_rate"]) == (
            channels is not None, channels, rate), name  # fmt: skip
        combined = results / "p" / "reconstructed" / f"{name}_combined.mp4"
        info = probe(combined)
        assert info.has_audio and info.audio_rate == SAMPLE_RATE and count_frames(combined) == frames
        # The muxed audio ends with the video: a longer source track is cut, not carried over.
        assert abs(info.duration - frames / 25) < 0.1, (name, info.duration)
    with wave.open(str(results / "audio" / "silent.wav")) as wav:
        silence = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    assert len(silence) == round(30 / 25 * SAMPLE_RATE) and not silence.any()

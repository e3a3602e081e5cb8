"""`./tokenize_video`: the original eight positional arguments and the original files."""

import subprocess

import pytest
import torch
from helpers import REPO, count_frames, make_clip

from avtokens import load_tokens
from avtokens.media import probe


def tokenize_video(*args):
    return subprocess.run([str(REPO / "tokenize_video"), *map(str, args)], capture_output=True, text=True)


def audio_codes(tokens):
    return load_tokens(tokens / "tom_audio_tokens.safetensors")["codes"].shape[1]


def test_seed_arguments_produce_the_seed_files(tmp_path):
    videos, tokens, recon = tmp_path / "videos dir", tmp_path / "tokens", tmp_path / "recon"
    make_clip(videos / "orig clip.mp4", 90, 64, 130, rate="25", audio_channels=1, audio_rate=22050)
    proc = tokenize_video(videos, "orig clip.mp4", "tom", 1, 8, 16, tokens, recon, "--weights", "demo",
                          "--cores", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = [
        videos / "tom.wav",
        tokens / "tom_visual_tokens.safetensors",
        tokens / "tom_audio_tokens.safetensors",
        recon / "tom_visual.mp4",
        recon / "tom_audio.wav",
        recon / "tom_combined.mp4",
    ]
    for path in expected:
        assert path.is_file() and path.stat().st_size > 0, path
        assert str(path) in proc.stdout  # it says where the outputs are
    # The outputs are the workflow's files, linked, not second copies.
    assert (tokens / "tom_visual_tokens.safetensors").stat().st_nlink == 2
    visual = load_tokens(tokens / "tom_visual_tokens.safetensors")
    # 130 frames: a window of 121 (16 latent frames), then 9 frames (2 latent frames).
    assert visual["indices"].shape == (1, 16 + 2, 4, 6)
    assert visual.metadata["windows"]["frames"] == 121
    # The original description's sentence, for this clip (27.6 code frames per 8 frames at 25 fps).
    sentence = [line for line in proc.stdout.splitlines() if line.startswith("tom: ")]
    audio_count = audio_codes(tokens) * 9
    assert sentence == [
        f"tom: 0 min 5 sec; 25 fps; 90x64 => 18 latent frames of 6x4 visual + 27x9 audio; 432 visual tokens "
        f"& {audio_count:,} audio tokens = {(432 + audio_count) / 1e6:.2f} million tokens"
    ]
    assert visual.metadata["tokenizer"]["kind"] == "DV" and visual.metadata["stand_in_weights"]
    audio = load_tokens(tokens / "tom_audio_tokens.safetensors")
    assert (
        audio.metadata["audio"]["source_rate"] == 22050
        and audio["code_ranges"][-1, 1] == audio["codes"].shape[1]
    )
    combined = probe(recon / "tom_combined.mp4")
    assert (combined.width, combined.height, combined.fps, combined.has_audio) == (90, 64, 25, True)
    assert count_frames(recon / "tom_combined.mp4") == 130
    assert "stand-in" in proc.stdout
    # A repeated call finds nothing stale and leaves the tokens as they were.
    before = (tokens / "tom_visual_tokens.safetensors").read_bytes()
    again = tokenize_video(videos, "orig clip.mp4", "tom", 1, 8, 16, tokens, recon, "--weights", "demo")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert (tokens / "tom_visual_tokens.safetensors").read_bytes() == before
    assert torch.equal(load_tokens(tokens / "tom_visual_tokens.safetensors")["indices"], visual["indices"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["d", "f.mp4", "n", "2", "8", "8", "t", "r"], "argument is_discrete: invalid choice: '2'"),
        (["d", "f.mp4", "n", "0", "4", "16", "t", "r"], "temporal 4 exists only with spatial 8"),
        (["d", "f.mp4", "n", "0", "8", "8", "t", "r"], "does not exist"),
        (["d", "f.mp4", "n", "0", "8"], "the following arguments are required"),
        (["d", "f.mp4", "n", "0", "8", "8", "t", "r", "--weights", "best"], "argument --weights"),
    ],
)
def test_wrong_arguments_give_one_line_and_the_usage(tmp_path, args, message):
    proc = tokenize_video(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: tokenize_video")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tokenize_video: error:")]
    assert len(errors) == 1 and message in errors[0]

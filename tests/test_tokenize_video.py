"""`./tokenize_video`: the original eight positional arguments and the original files."""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, count_frames, make_clip, on_small_disk, place_stand_ins

from avtokens import load_tokens
from avtokens.media import probe


def tokenize_video(*args):
    return subprocess.run([str(REPO / "tokenize_video"), *map(str, args)], capture_output=True, text=True)


def work_folder(tokens: Path, nickname: str = "tom") -> Path:
    """Where ./tokenize_video runs the workflow for `nickname` into `tokens`."""
    return tokens / ".tokenize_video" / nickname


def audio_codes(tokens):
    return load_tokens(tokens / "tom_audio_tokens.safetensors")["codes"].shape[1]


@pytest.mark.workflow
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
    says_what_is_true(proc, lines=60)
    # A repeated call finds nothing stale and leaves the tokens as they were.
    before = (tokens / "tom_visual_tokens.safetensors").read_bytes()
    again = tokenize_video(videos, "orig clip.mp4", "tom", 1, 8, 16, tokens, recon, "--weights", "demo")
    assert again.returncode == 0 and "tokenize_video: nothing to redo" in again.stderr
    assert (tokens / "tom_visual_tokens.safetensors").read_bytes() == before
    assert torch.equal(load_tokens(tokens / "tom_visual_tokens.safetensors")["indices"], visual["indices"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["d", "f.mp4", "n", "2", "8", "8", "t", "r"], "argument is_discrete: invalid choice: '2'"),
        (["d", "f.mp4", "n", "0", "4", "16", "t", "r"], "no Cosmos tokenizer of release 0.1 is CV4x16x16"),
        (
            ["d", "f.mp4", "n", "1", "4", "8", "t", "r", "--family", "wan2.1"],
            "no Wan2.1 VAE tokenizer of release 2.1 is DV4x8x8; it has CV4x8x8",
        ),
        (["d", "f.mp4", "n", "0", "4", "8", "t", "r", "--family", "vq"], "argument --family: invalid choice"),
        (["d", "f.mp4", "n", "0", "8", "8", "t", "r"], "does not exist"),
        (["d", "f.mp4", "n", "0", "8"], "the following arguments are required"),
        (["d", "f.mp4", "n", "0", "8", "8", "t", "r", "--weights", "best"], "argument --weights"),
        (
            ["d", "f.mp4", "n", "1", "8", "16", "t", "r", "--buckets", "1280x720,720x1270"],
            "preset 'DV8x16x16': bucket 720x1270: the Cosmos DV8x16x16 takes sides that are multiples of 16",
        ),
        (["d", "f.mp4", "n", "0", "8", "8", "t", "r", "--fps", "0"], "fps: a frame rate must be above 0"),
        (
            ["d", "f.mp4", "n", "0", "8", "8", "t", "r", "--size", "64x64", "--buckets", "64x64"],
            "argument --buckets: not allowed with argument --size",
        ),
    ],
)
def test_wrong_arguments_give_one_line_and_the_usage(tmp_path, args, message):
    proc = tokenize_video(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("usage: tokenize_video")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("tokenize_video: error:")]
    assert len(errors) == 1 and message in errors[0]


TRACEBACK = re.compile(r"Traceback|\^\^\^\^|File \".*\", line \d+")


def says_what_is_true(proc: subprocess.CompletedProcess, lines: int) -> None:
    """Short output whose paths all exist and which suggests no command: progress, warnings,
    errors and the outputs, not the workflow's job blocks or its own advice."""
    text = proc.stdout + proc.stderr
    assert len(text.splitlines()) <= lines, text
    lines_of_a_path = [line for line in text.splitlines() if line.startswith("/")]  # may hold spaces
    other = "\n".join(line for line in text.splitlines() if not line.startswith("/"))
    paths = lines_of_a_path + re.findall(r"(?<![\w.])(/[^\s:;,()']+)", other)
    assert paths and [path for path in paths if not Path(path).exists()] == [], text
    workflow_talk = r"--report|(?<!/)\b(results|resources|logs)/|Job stats|localrule|rule \w+:|snakemake"
    assert not re.search(workflow_talk, text), text


@pytest.mark.workflow
def test_a_failing_video_names_the_reason_and_the_whole_log(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "clip.mp4").write_text("not a video\n")
    # The stand-ins as an earlier call left them (test_seed_arguments builds them).
    place_stand_ins(work_folder(tmp_path / "tokens"))
    proc = tokenize_video(videos, "clip.mp4", "tom", 1, 8, 16, tmp_path / "tokens", tmp_path / "recon",
                          "--weights", "demo", "--cores", 1)  # fmt: skip
    assert proc.returncode == 1 and not TRACEBACK.search(proc.stderr)
    *_, pointer, last = proc.stderr.strip().splitlines()
    log = work_folder(tmp_path / "tokens") / "tokenize_video.log"
    assert pointer == f"tokenize_video: the workflow's whole log: {log}"
    assert re.fullmatch(rf"tokenize_video: {videos / 'clip.mp4'}: not a readable video \(.+\)", last), last
    assert "Error in rule" in log.read_text()  # Snakemake's account, kept in the log
    says_what_is_true(proc, lines=12)


@pytest.mark.workflow
@pytest.mark.parametrize("size", ["64k", "600k", "2400k"])  # the space runs out in different jobs
def test_a_full_disk_ends_in_one_line_and_leaves_nothing_behind(tmp_path, size):
    videos = tmp_path / "videos"
    make_clip(videos / "clip.mp4", 96, 64, 40, rate="25")
    disk = tmp_path / "disk"
    command = [REPO / "tokenize_video", videos, "clip.mp4", "tom", 1, 8, 16, disk / "tokens", disk / "recon",
               "--weights", "demo", "--cores", 1]  # fmt: skip
    run = on_small_disk(size, disk, command)
    assert run["returncode"] == 1
    last = run["stderr"].strip().splitlines()[-1]
    assert re.fullmatch(r"tokenize_video: /\S.*: cannot be written \(No space left on device\)", last), last
    assert not TRACEBACK.search(run["stderr"] + run["stdout"])
    # Nothing in the user's folders: only the work folder, which a rerun with space continues.
    assert [f for f in run["files"] if not f.startswith("tokens/.tokenize_video/")] == []
    assert [f for f in run["files"] if "partial" in f] == []
    assert sorted(p.name for p in videos.iterdir()) == ["clip.mp4"]


@pytest.mark.workflow
def test_a_full_reconstruction_folder_is_the_one_named(tmp_path):
    """Only the reconstruction folder full: the files are placed together at the end, and the
    line names the one that did not fit, not the .wav placed beside the video first."""
    videos = tmp_path / "videos"
    make_clip(videos / "clip.mp4", 96, 64, 40, rate="25")
    disk = tmp_path / "disk"
    place_stand_ins(work_folder(tmp_path / "tokens"))  # as an earlier call left them
    command = [REPO / "tokenize_video", videos, "clip.mp4", "tom", 1, 8, 16, tmp_path / "tokens", disk,
               "--weights", "demo", "--cores", 1]  # fmt: skip
    run = on_small_disk("64k", disk, command)
    assert run["returncode"] == 1
    last = run["stderr"].strip().splitlines()[-1]
    assert re.fullmatch(
        rf"tokenize_video: {disk}/tom_\w+\.\w+: cannot be written \(No space left on device\)", last
    ), last
    assert not (videos / "tom.wav").exists() and run["files"] == []  # all placed or none


@pytest.mark.parametrize("read_only", ["videos", "recon"])
def test_read_only_folders_are_refused_before_any_work(tmp_path, read_only):
    """Videos on a read-only share (the .wav goes beside them), or a read-only output folder."""
    clip = make_clip(tmp_path / "clip.mp4", 32, 32, 9)
    share = tmp_path / "share"
    videos = share / "videos" if read_only == "videos" else tmp_path / "videos"
    recon = share / "recon" if read_only == "recon" else tmp_path / "recon"
    if read_only == "recon":
        videos.mkdir()
        shutil.copy(clip, videos / "clip.mp4")
    command = [REPO / "tokenize_video", videos, "clip.mp4", "tom", 1, 8, 16, tmp_path / "tokens", recon,
               "--weights", "demo"]  # fmt: skip
    run = on_small_disk(
        "1m", share, command, read_only=True, copy_in={"videos/clip.mp4": clip, "recon/x": clip}
    )
    assert run["returncode"] == 2 and not TRACEBACK.search(run["stderr"])
    hint = "; --wav-dir puts the .wav elsewhere" if read_only == "videos" else ""
    folder = videos if read_only == "videos" else recon
    assert run["stderr"].strip().splitlines()[-1] == (
        f"tokenize_video: error: cannot write into {folder} (Read-only file system){hint}"
    )
    assert not (tmp_path / "tokens").exists() and not (tmp_path / "recon").exists()  # nothing made


@pytest.mark.workflow
def test_the_same_command_twice_at_once(tmp_path):
    """A retried cron job: the second run waits for the first, says so, then finds it done."""
    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    make_clip(videos / "clip.mp4", 48, 32, 30, rate="25")
    args = [videos, "clip.mp4", "tom", 1, 8, 16, tmp_path / "tokens", tmp_path / "recon", "--weights", "demo",
            "--cores", 1, "--wav-dir", wavs]  # fmt: skip
    command = [str(REPO / "tokenize_video"), *map(str, args)]
    place_stand_ins(work_folder(tmp_path / "tokens"))  # as an earlier call left them
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = work_folder(tmp_path / "tokens") / ".tokenize_video.lock"
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and first.poll() is None:
        time.sleep(0.05)
    second = tokenize_video(*args)
    out, err = first.communicate()
    assert first.returncode == 0 and second.returncode == 0, err[-3000:] + second.stderr[-3000:]
    assert (
        f"another run of tom into {tmp_path / 'tokens'} is under way (pid {first.pid}); waiting"
        in second.stderr
    )
    assert "tokenize_video: nothing to redo" in second.stderr and not TRACEBACK.search(err + second.stderr)
    assert (wavs / "tom.wav").is_file() and not (videos / "tom.wav").exists()
    assert load_tokens(tmp_path / "tokens" / "tom_visual_tokens.safetensors")["indices"].shape[1] == 5
    assert not [p for p in tmp_path.rglob("*partial*")]

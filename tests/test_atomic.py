"""Outputs appear whole or not at all, whatever their name."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avtokens import AvTokensError
from avtokens.atomic import atomic_output, storage_problem


@pytest.mark.parametrize("name", ["tokens.safetensors", "tokens", "clip [1].mp4", "a.b.c"])
def test_an_output_appears_only_when_its_block_succeeds_and_leftovers_go(tmp_path, name):
    dest = tmp_path / name
    stem, suffix = (name, "") if "." not in name else (dest.stem, dest.suffix)
    staging = tmp_path / f".{name}.partial"
    staging.mkdir()
    leftover = staging / f"{stem}.99999{suffix}"  # a killed earlier attempt's
    leftover.write_bytes(b"half")
    other = tmp_path / ".other.partial" / f"other.99999{suffix}"  # another output's: not ours
    other.parent.mkdir()
    other.write_bytes(b"half")
    with atomic_output(dest) as tmp:
        assert tmp == staging / f"{stem}.{os.getpid()}{suffix}"
        assert not leftover.exists() and other.exists()
        tmp.write_bytes(b"whole")
        assert not dest.exists()
    assert dest.read_bytes() == b"whole" and not staging.exists()
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the job failed")
    assert dest.read_bytes() == b"whole" and not staging.exists()  # the old output stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, ".other.partial"])


def test_writing_an_output_does_not_list_its_folder(tmp_path, monkeypatch):
    """A dataset's folders hold a file per clip: listing one per output made each clip's
    writes slower as the clips done grew (0.08 s an output at 100,000 files)."""
    listed = []
    for name in ("scandir", "listdir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path=".", real=real: listed.append(Path(path)) or real(path))
    dest = tmp_path / "clip_visual_tokens.safetensors"
    with atomic_output(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole"
    assert tmp_path not in listed


def test_a_writer_still_at_work_keeps_its_file(tmp_path):
    dest = tmp_path / "clip.wav"
    writer = subprocess.Popen(["sleep", "30"])
    try:
        staging = tmp_path / ".clip.wav.partial"
        staging.mkdir()
        theirs = staging / f"clip.{writer.pid}.wav"  # a concurrent writer's, still being written
        theirs.write_bytes(b"half")
        with atomic_output(dest) as tmp:
            tmp.write_bytes(b"whole")
        assert dest.read_bytes() == b"whole" and theirs.read_bytes() == b"half"
    finally:
        writer.kill()
        writer.wait()


WRITER = """
import sys
from avtokens.atomic import atomic_output
for k in range(int(sys.argv[2])):
    with atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"x" * 1000)
"""


def test_concurrent_writers_of_one_output_never_trip_over_each_other(tmp_path):
    """Two processes writing the same output over and over (two runs of one command): each
    write lands whole, and neither loses its temporary file to the other's clean-up."""
    dest = tmp_path / "tom.wav"
    command = [sys.executable, "-c", WRITER, dest, "400"]
    writers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert dest.read_bytes() == b"x" * 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["tom.wav"]


def test_a_full_or_read_only_disk_is_named_in_one_line(tmp_path, monkeypatch):
    dest = tmp_path / "tokens.safetensors"
    with pytest.raises(AvTokensError) as err, atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == f"{dest}: cannot be written (No space left on device)"
    with pytest.raises(AvTokensError) as err, atomic_output(dest):
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        except OSError:
            raise RuntimeError("a library's own words") from None  # the cause is still in the chain
    assert str(err.value).endswith("cannot be written (Read-only file system)")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    # A library that says nothing useful (torch: "unexpected pos"), on a disk with no space left.
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    assert (
        storage_problem(RuntimeError("unexpected pos 344896 vs 344784"), tmp_path)
        == "No space left on device"
    )
    assert storage_problem(ValueError("a bug"), tmp_path) == "No space left on device"  # it is full, though
    monkeypatch.undo()
    assert storage_problem(ValueError("a bug"), tmp_path) is None


def test_a_failed_output_is_named_not_the_outputs_written_around_it(tmp_path):
    """Outputs written together (tokenize_video's placing of its files): the one whose disk is
    full is named, not one whose write merely stops because of it."""
    with pytest.raises(AvTokensError) as err:
        with atomic_output(tmp_path / "a.wav") as a, atomic_output(tmp_path / "b.mp4"):
            a.write_text("made")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(err.value) == f"{tmp_path / 'b.mp4'}: cannot be written (No space left on device)"
    assert list(tmp_path.iterdir()) == []  # neither placed, no leftovers

"""Outputs appear whole or not at all, whatever their name."""

import os

import pytest

from avtokens.atomic import atomic_output


@pytest.mark.parametrize("name", ["tokens.safetensors", "tokens", "clip [1].mp4", "a.b.c"])
def test_an_output_appears_only_when_its_block_succeeds_and_leftovers_go(tmp_path, name):
    dest = tmp_path / name
    stem, suffix = (name, "") if "." not in name else (dest.stem, dest.suffix)
    leftover = tmp_path / f".{stem}.partial-99999{suffix}"  # a killed earlier attempt's
    leftover.write_bytes(b"half")
    other = tmp_path / f".other.partial-99999{suffix}"  # another output's: not ours to remove
    other.write_bytes(b"half")
    with atomic_output(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name == f".{stem}.partial-{os.getpid()}{suffix}"
        assert not leftover.exists() and other.exists()
        tmp.write_bytes(b"whole")
        assert not dest.exists()
    assert dest.read_bytes() == b"whole" and not tmp.exists()
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the job failed")
    assert dest.read_bytes() == b"whole" and not tmp.exists()  # the old output stays whole

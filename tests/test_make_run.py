"""`make run`, the README's first command, in a clean copy of the repository: what a newcomer
types after `git clone`. Nothing made by an earlier run (the example clip, stand-in weights,
results) is there, so a rule that makes a source must not be mistaken for a missing file."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from avtokens.workflow import REPO


@pytest.mark.workflow
def test_make_run_works_in_a_clean_copy(tmp_path):
    clone = tmp_path / "clone"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in filter(None, tracked.stdout.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree but not yet in git is left out
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes(source.read_bytes())
            (clone / name).chmod(source.stat().st_mode)
    assert not (clone / "resources").exists() and not (clone / "results").exists()
    # This test's own environment stands in for the one `make setup` would build (-o: not rebuilt).
    venv = Path(sys.prefix)
    proc = subprocess.run(["make", "run", f"VENV={venv}", "-o", f"{venv}/.installed"], cwd=clone,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "no such file" not in proc.stderr
    results = clone / "results" / "example"
    presets = ["CV4x8x8", "CV8x8x8", "CV8x16x16", "DV4x8x8", "DV8x8x8", "DV8x16x16"]
    for preset in presets:
        assert (results / preset / "reconstructed" / "example_combined.mp4").stat().st_size > 0
    with zipfile.ZipFile(results / "report.zip") as report:
        assert "report/report.html" in report.namelist()
        pages = [name for name in report.namelist() if name.endswith("/index.html")]
        assert len(pages) == len(presets) + 1  # a page per preset, and the overview
        assert {info.external_attr >> 16 & 0o777 for info in report.infolist()} == {0o644}  # readable by all
    assert "Report: results/example/report.zip" in proc.stdout

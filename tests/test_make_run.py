"""The README's first steps in a clean copy of the repository, as a newcomer takes them after
`git clone`: `make run`, then "Your own videos" with the starter config, offline. Nothing made
by an earlier run (the example clip, stand-in weights, results) is there, so a rule that makes
a source must not be mistaken for a missing file."""

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from helpers import TERMINAL_NOISE, after_the_progress, make_clip

from avtokens.workflow import REPO

PRESETS = ["CV4x8x8", "CV8x8x8", "CV8x16x16", "DV4x8x8", "DV8x8x8", "DV8x16x16"]
# What the terminal must not show: Snakemake's job blocks and statistics, Python's frames.
NOISE = re.compile(
    r"^(local)?rule \w+:|^\s+(input|output|jobid|reason): |Job stats|Shell command|Traceback", re.M
)


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory):
    """The working tree as git would check it out (its tracked files, and new ones not yet
    committed), with `make run` done; this test's environment stands in for the `.venv` that
    `make setup` builds. On one core (`CORES=1`): the suite runs a process per core, and two
    jobs at once beside it cost more CPU time (test_workflow's run is the one with jobs at once)."""
    clone = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True)  # fmt: skip
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():  # a file deleted in the working tree but not yet in git is left out
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            (clone / name).write_bytes(source.read_bytes())
            (clone / name).chmod(source.stat().st_mode)
    assert not (clone / "resources").exists() and not (clone / "results").exists()
    venv = Path(sys.prefix)
    (clone / ".venv").symlink_to(venv)
    proc = subprocess.run(["make", "run", f"VENV={venv}", "CORES=1", "-o", f"{venv}/.installed"], cwd=clone,
                          capture_output=True, text=True)  # fmt: skip
    return clone, proc


@pytest.mark.workflow
def test_make_run_works_in_a_clean_copy_and_says_little(clean_copy):
    clone, proc = clean_copy
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "no such file" not in proc.stderr
    results = clone / "results" / "example"
    for preset in PRESETS:
        assert (results / preset / "reconstructed" / "example_combined.mp4").stat().st_size > 0
    with zipfile.ZipFile(results / "report.zip") as report:
        assert "report/report.html" in report.namelist()
        pages = [name for name in report.namelist() if name.endswith("/index.html")]
        assert len(pages) == len(PRESETS) + 1  # a page per preset, and the overview
        assert {info.external_attr >> 16 & 0o777 for info in report.infolist()} == {0o644}  # readable by all
    assert "Report: results/example/report.zip" in proc.stdout
    # Progress, the outputs and the report's path; the job blocks are in the log it names.
    terminal = proc.stdout + proc.stderr
    assert not NOISE.search(terminal), terminal
    steps = [line for line in terminal.splitlines() if re.fullmatch(r"\d+ of \d+ steps \(\d+%\) done", line)]
    said = [line for line in terminal.splitlines() if line not in steps and not line.startswith(sys.prefix)]
    assert len(steps) == 62 and len(said) < 40, terminal  # 62 jobs; 6 x 2 mp4s and 12 more outputs listed
    assert "--report" not in "\n".join(said)  # which make runs itself, after: not to be suggested
    account = re.search(r"^Complete log\(s\): (.+)$", terminal, re.M)[1]
    assert "localrule stand_in_weights:" in Path(account).read_text()


@pytest.mark.workflow
def test_the_readmes_example_sentence_is_what_make_run_writes(clean_copy):
    clone, _ = clean_copy
    readme = re.sub(r"\s+", " ", (REPO / "README.md").read_text())
    preset, sentence = re.search(r"what `make run` writes for its (\w+) preset \([^)]*\): `(example: [^`]+)`",
                                 readme).groups()  # fmt: skip
    summary = json.loads(
        (clone / "results" / "example" / preset / "metrics" / "example_summary.json").read_text()
    )
    assert sentence == summary["description"]


def readme_steps() -> list[tuple[str, str]]:
    """The code blocks of the README's "Your own videos", as (language, code)."""
    section = (REPO / "README.md").read_text().split("## Your own videos\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^( *)```(\w*)\n(.*?)^\1```", section, re.M | re.S)
    return [(language, textwrap.dedent(code)) for _, language, code in blocks]


@pytest.mark.workflow
def test_the_readmes_steps_for_your_own_videos_finish_offline(clean_copy, tmp_path):
    clone, made = clean_copy
    assert made.returncode == 0
    copy, sheet, run = [code for _, code in readme_steps()]
    assert (copy.split(), run.split()) == (
        ["cp", "config/starter.yaml", "my_config.yaml", "cp", "config/starter_videos.tsv", "my_videos.tsv"],
        [".venv/bin/snakemake", "--configfile", "my_config.yaml"],
    )
    nowhere = "http://127.0.0.1:9"  # a proxy that refuses: any download would fail at once
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": nowhere, "HTTP_PROXY": nowhere}
    subprocess.run(["bash", "-c", copy], cwd=clone, check=True, env=offline)
    # Step 2: the sheet, as the README shows it, with a video of ours (a name with a space).
    header = sheet.splitlines()[0]
    assert header == "name\tpath" and (clone / "my_videos.tsv").read_text().startswith(header)
    videos = {"my clip": make_clip(tmp_path / "my clip.mp4", 48, 32, 9, rate="25")}
    (clone / "my_videos.tsv").write_text(header + "\n" + "".join(f"{n}\t{p}\n" for n, p in videos.items()))
    proc = subprocess.run(["bash", "-c", run], cwd=clone, env=offline, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = clone / "results" / "my_videos"
    for preset in ("DV8x16x16", "wan2.1", "CV8x8x8-mimi"):  # Cosmos, the Wan2.1 VAE, Mimi's audio
        for video in videos:
            assert (results / preset / "reconstructed" / f"{video}_combined.mp4").stat().st_size > 0
    rows = [json.loads(line) for line in (results / "manifest.jsonl").read_text().splitlines()]
    assert {(row["family"], row["audio_codec"]) for row in rows} == {("cosmos", "dac"), ("wan2.1", "dac"),
                                                                      ("cosmos", "mimi")}  # fmt: skip
    assert (results / "report" / "overview" / "index.html").is_file() and not NOISE.search(proc.stderr)


@pytest.mark.workflow
def test_a_missing_video_ends_the_run_in_two_lines_naming_the_fix(clean_copy, tmp_path):
    """The example's sheet and a video that is not there: the example's files are made (by
    `make run`), so the run is its verdict alone, which fails, saying what to do."""
    clone, made = clean_copy
    assert made.returncode == 0
    missing = tmp_path / "lost clip.mp4"
    sheet = tmp_path / "my videos.tsv"
    sheet.write_text(f"name\tpath\nexample\tresources/example/example.mp4\nlost clip\t{missing}\n")
    command = [".venv/bin/snakemake", "--configfile", "config/example.yaml", "--config", f"videos={sheet}"]
    proc = subprocess.run(command, cwd=clone, capture_output=True, text=True)
    assert proc.returncode != 0
    end = after_the_progress(proc.stderr)  # the verdict is the run's one job, so no step is done
    assert end[:-1] == [
        f"ERROR {missing}: no such file (video lost clip of {sheet}); left out",  # as the run starts
        f"ERROR 1 video(s) of {sheet} do not exist or cannot be read and were left out: {missing}. Fix "
        "their paths or remove their rows, and run again.",
    ], proc.stderr
    assert end[-1].startswith("Complete log(s): ") and not TERMINAL_NOISE.search(proc.stderr), proc.stderr
    account = Path(end[-1].removeprefix("Complete log(s): ")).read_text()
    assert "Error in rule check_run" in account and "Job stats" in account  # the account is there

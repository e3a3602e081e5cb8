"""The workflow as a module of an outer workflow (the README's "Use as a module"), with a
config that names only what it changes; the run's verdict carried into the module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, planned_jobs
from snakemake.utils import validate

from avtokens.audio_codecs import AUDIO_CODECS
from avtokens.renamed_keys import renamed_keys


def readme_blocks(section: str) -> dict[str, str]:
    """The first code block of each language in a README section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for language, code in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S):
        blocks.setdefault(language, code)
    return blocks


def outer_workflow(folder: Path, sheet: dict[str, str], **config) -> Path:
    """The README's outer Snakefile and config (plus `config`) in `folder`, with `sheet`."""
    blocks = readme_blocks("Use as a module")
    folder.mkdir(parents=True, exist_ok=True)
    snakefile = blocks["python"].replace("/path/to/avtokens/Snakefile", str(REPO / "Snakefile"))
    assert snakefile != blocks["python"]
    (folder / "Snakefile").write_text(snakefile, encoding="utf-8")
    settings = {**yaml.safe_load(blocks["yaml"]), **config}
    (folder / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    rows = "".join(f"{name}\t{path}\n" for name, path in sheet.items())
    (folder / settings["videos"]).write_text("name\tpath\n" + rows, encoding="utf-8")
    return folder


def snakemake(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", *extra], cwd=folder,
                          capture_output=True, text=True, env=env)  # fmt: skip


@pytest.mark.workflow
def test_an_outer_workflow_runs_the_example_and_fails_when_a_video_fails(tmp_path):
    example = {"example": "resources/example/example.mp4"}
    outer = outer_workflow(tmp_path / "outer", example)
    assert len(yaml.safe_load((outer / "config.yaml").read_text())) == 4
    proc = snakemake(outer)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = outer / "tokens"
    done = yaml.safe_load((results / "run_complete.json").read_text())
    assert done == {"videos": 1, "presets": ["DV8x16x16"]}
    for name in ("example_visual_tokens.safetensors", "example_audio_tokens.safetensors"):
        assert (results / "DV8x16x16" / "tokens" / name).stat().st_size > 0
    assert (results / "DV8x16x16" / "reconstructed" / "example_combined.mp4").stat().st_size > 0

    # A missing file in the sheet is left out at the start; with nothing else to do, the run
    # (the verdict job alone) still ends in failure.
    outer_workflow(outer, {**example, "gone": "gone.mp4"})
    missing = snakemake(outer)
    text = missing.stdout + missing.stderr
    assert missing.returncode != 0, text[-3000:]
    assert "1 video(s) of videos.tsv do not exist or cannot be read and were left out: gone.mp4" in text
    assert planned_jobs(missing) == {"avtokens_check_run": 1, "avtokens_all": 1}
    assert not (results / "run_complete.json").exists()

    # Shard mode with an empty file as the sheet's video: it fails inside shard jobs, which
    # succeed; the run must not. (The example is left out: in shard mode it would be made
    # again, and nothing here depends on it.)
    (outer / "empty.mp4").write_bytes(b"")
    outer_workflow(outer, {"empty": "empty.mp4"}, shard_size=2)
    failed = snakemake(outer)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    failed_in = "extract_wav (44100hz), visual_encode (DV8x16x16)"  # one line, one reason
    assert f"ERROR video empty (empty.mp4): {failed_in}: empty.mp4: file is empty" in text
    assert "1 video(s) failed inside shard jobs" in text
    table = (results / "shards" / "failed_videos.tsv").read_text().splitlines()
    rows = [row.split("\t")[:3] for row in table[1:]]
    assert rows == [["empty", "empty.mp4", "extract_wav"], ["empty", "empty.mp4", "visual_encode"]]
    assert not (results / "run_complete.json").exists()


def test_the_schema_defaults_are_the_documented_config():
    filled = {}
    validate(filled, str(REPO / "config" / "schemas" / "config.schema.yaml"))
    assert filled == yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    # Where each codec's files come from by default: its own source, byte for byte.
    assert sorted(filled["codecs"]) == sorted(AUDIO_CODECS)
    assert all(codec.source(filled) == codec.source({}) for codec in AUDIO_CODECS.values())
    partial = {"picture": {"pixels": "stored"}, "run": ["DV4x8x8"]}
    validate(partial, str(REPO / "config" / "schemas" / "config.schema.yaml"))
    assert partial["picture"] == {"pixels": "stored", "deinterlace": True, "fit": "pad"}
    assert partial["run"] == ["DV4x8x8"] and partial["reconstruction"] == {"crf": 12, "x264_preset": "medium"}


def test_a_renamed_key_is_refused_naming_what_replaces_it():
    old = {"dac_url": "https://example.org/w.pth", "videos_per_job": 8, "batch_windows": 4, "shard_size": 8}
    assert renamed_keys(old) == [
        "config: `videos_per_job` is now `shard_size`: every stage (not only the model ones) runs one "
        'job per shard of that many videos (README, "Many short clips: shard mode"); replace it',
        "config: `batch_windows` is now `batch_megapixels`, frames x pixels per model call in "
        "millions (64: four 17-frame windows at 1280x720); replace it",
        "config: `dac_url` is now `codecs: {dac: {url: ...}}`, where each audio codec's official files "
        'are fetched from (README, "Real checkpoints"); replace it',
    ]
    assert renamed_keys(yaml.safe_load((REPO / "config" / "config.yaml").read_text())) == []


def test_a_wrong_setting_in_a_partial_config_is_one_line(tmp_path):
    example = {"example": "resources/example/example.mp4"}
    outer = outer_workflow(tmp_path / "outer", example, weights="offical")
    proc = snakemake(outer, "--dry-run")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    errors = [line for line in text.splitlines() if "offical" in line]
    assert errors == ["ERROR config: weights: 'offical' is not one of ['official', 'demo']"], text
    assert "$schema" not in text and "properties" not in text  # no schema dump

    outer = outer_workflow(tmp_path / "sheet", {"a/b": "resources/example/example.mp4"})
    proc = snakemake(outer, "--dry-run")
    assert proc.returncode != 0
    assert "videos.tsv: line 2, column name: 'a/b' does not match" in proc.stdout + proc.stderr

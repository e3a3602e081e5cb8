"""The workflow run from Python: a work folder, the default config plus an overlay."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config" / "config.yaml"


def workflow_command(workdir: Path, overlay: dict, *extra: str, cores: str | int = "all") -> list[str]:
    """Write `overlay` to `workdir`/overlay.yaml and return the snakemake command that runs
    the workflow there with config/config.yaml overlaid by it (the overlay wins)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    overlay_file = workdir / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay, allow_unicode=True), encoding="utf-8")
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(DEFAULT_CONFIG), str(overlay_file),
            "--cores", str(cores), *extra]  # fmt: skip

"""Figures for the report: quality against token rate across presets, PSNR along each video."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from avtokens.atomic import atomic_output  # noqa: E402


def plot_quality_vs_tokens(summaries: list, dest) -> None:
    """Mean PSNR and SSIM against tokens per second, one point per preset. (The audio is
    coded once per video, the same for every preset: report/audio_table.tsv.)"""
    per_preset = defaultdict(list)
    for path in summaries:
        s = json.loads(Path(path).read_text())
        per_preset[s["preset"]].append(s)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for preset, items in sorted(per_preset.items()):
        rate = sum(s["tokens_per_second"] for s in items) / len(items)
        psnr = sum(s["psnr"]["mean"] for s in items) / len(items)
        ssim = sum(s["ssim"]["mean"] for s in items) / len(items)
        for axis, value in ((left, psnr), (right, ssim)):
            axis.scatter(rate, value)
            axis.annotate(preset, (rate, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set(xscale="log", xlabel="tokens per second (visual + audio)", ylabel="video PSNR, mean (dB)")
    right.set(
        xscale="log",
        xlabel="tokens per second (visual + audio)",
        ylabel="video SSIM, mean",
    )
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
    stand_in = any(s["stand_in_weights"] for items in per_preset.values() for s in items)
    fig.suptitle(
        "Quality against token rate"
        + ("  [stand-in demo weights: numbers are meaningless]" if stand_in else "")
    )
    fig.tight_layout()
    _save(fig, dest)


def plot_frame_psnr(frame_metrics: dict, video: str, dest) -> None:
    """PSNR of every frame for each preset; dotted lines where a tokenizer window starts."""
    # Fixed margins: tight_layout measures every label and costs a third of the figure,
    # which is drawn for every clip of a dataset.
    margins = dict(left=0.065, right=0.985, bottom=0.12, top=0.92)
    fig, axis = plt.subplots(figsize=(11, 4), gridspec_kw=margins)
    for preset, path in sorted(frame_metrics.items()):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        frames = [int(r["frame"]) for r in rows]
        line = axis.plot(frames, [float(r["psnr"]) for r in rows], label=preset, linewidth=1)[0]
        starts = [
            int(r["frame"]) for prev, r in zip(rows, rows[1:], strict=False) if r["window"] != prev["window"]
        ]
        for start in starts:
            axis.axvline(start, color=line.get_color(), linestyle=":", linewidth=0.8, alpha=0.6)
    axis.set(
        xlabel="frame (dotted: a tokenizer window starts)",
        ylabel="PSNR (dB)",
        title=f"{video}: PSNR per frame",
    )
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    _save(fig, dest)


def _save(fig, dest) -> None:
    with atomic_output(dest) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

"""The benchmark commands in CI-sized form: they run on CPU and report sound numbers.

The full-size figures are in docs/benchmarks.md.
"""

import json
import subprocess
import sys
import time

import pytest
from helpers import benchmark

from avtokens.workflow import REPO


@pytest.mark.workflow
@pytest.mark.parametrize(
    "family, preset, codec, network, engines",
    [("wan2.1", "CV4x8x8", "mimi", "tiny", ["auto"]),
     ("cosmos", "CV8x16x16", "dac", "full", ["torchscript", "eager"])],  # full: the released architecture
)  # fmt: skip
def test_the_throughput_benchmark_measures_every_stage(tmp_path, family, preset, codec, network, engines):
    report, seconds = tmp_path / "throughput.json", "1"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--family", family, "--preset", preset,
         "--codec", codec, "--network", network, "--size", "128x64", "--seconds", seconds, "--repeats", "1",
         "--batch-megapixels", "0.3", "--json", str(report), "--engines", *engines],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    frames = round(24 * float(seconds))  # the clip is made at 24 fps
    assert result["frames"] == frames and result["runtime"]["device"] == "cpu"
    assert (result["family"], result["preset"], result["codec"]) == (family, preset, codec)
    # The stages run one after another inside the command, so the time each speed implies adds
    # up to less than the command's own wall time, measured here: a speed from a wrong clock or
    # a wrong count of frames shows as more time than there was.
    speeds = ("e2e_encode_fps", "e2e_decode_fps", "upstream_round_trip_fps")
    stage_seconds = [frames / result[key] for key in speeds]
    real_time = ("audio_model_encode_rtf", "audio_model_decode_rtf", "audio_encode_rtf", "audio_decode_rtf")
    stage_seconds += [float(seconds) / result[key] for key in real_time]
    assert min(stage_seconds) > 0 and sum(stage_seconds) < wall
    # Each stage's own peak (a process-lifetime figure would give every stage the same one).
    assert len(set(result["peak_host_mib"].values())) > 1
    headline = (
        f"headline: end-to-end encode runs at {result['headline_encode_ratio']:.0%} of the model's own speed"
    )
    assert headline in proc.stdout
    by_engine = result["model_only_by_engine"]
    if family == "cosmos":  # our network is checked against the file's graph when it loads; the graph is not
        assert by_engine["eager"]["load_seconds"] > by_engine["eager"]["self_check_seconds"] > 0
        assert by_engine["torchscript"]["self_check_seconds"] == 0
    else:  # a family with no such check says so
        assert [figures["self_check_seconds"] for figures in by_engine.values()] == [None]
        assert "self-check n/a" in proc.stdout


@pytest.mark.workflow
def test_every_rule_needs_no_more_memory_for_a_clip_five_times_as_long(tmp_path):
    """Short windows, one per model call, and short DAC windows keep this small; the audio and
    the number of windows still grow fivefold, and the short clip already streams many calls
    past the reader and the writer (docs/benchmarks.md has 1 and 20 minutes of 640x480 at
    30 fps with the defaults). 12 fps: the frames of 2 minutes at 6 fps in half the audio, which
    costs most of the time (DAC on the CPU). One core: the suite runs a process per core."""
    report = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--minutes", "0.2", "1", "--fps", "12",
         "--size", "320x240", "--window", "17", "--batch-megapixels", "1.4", "--audio-window-seconds", "5",
         "--max-ratio", "1.2", "--cores", "1", "--json", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    record = json.loads(report.read_text())
    rules = set(record["ratios"])
    assert {"visual_encode", "visual_decode", "audio_encode", "audio_decode", "extract_wav", "align_audio",
            "summarize", "summarize_audio", "compare_video"} <= rules  # fmt: skip
    assert max(record["ratios"].values()) <= 1.2, proc.stdout


def test_each_stage_reports_its_own_peak_memory_not_the_process_lifetime_peak():

    import numpy as np
    import torch

    throughput = benchmark("throughput")
    with throughput.Stage(torch.device("cpu")) as large:
        block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB, touched
        del block
    with throughput.Stage(torch.device("cpu")) as small:
        pass
    assert large.host_mib - small.host_mib > 250


@pytest.mark.workflow
def test_the_data_loading_benchmark_reads_a_clip_not_the_file(tmp_path):
    report = tmp_path / "data_loading.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_loading.py"), "--minutes", "0.5",
         "--size", "320x240", "--clips", "40", "--json", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    presets = json.loads(report.read_text())["presets"]
    assert set(presets) == {"CV8x16x16", "DV8x16x16"}
    for figures in presets.values():
        ours, loaded = figures["ours"], figures["load_tokens"]
        assert ours["clip_bytes"] == loaded["clip_bytes"] > 0  # the same clips, both ways
        # The clip plus its share of the two files' headers (about 2 KB each), read once (40 clips
        # from one episode).
        assert ours["clip_bytes"] <= ours["bytes_read_per_clip"] < ours["clip_bytes"] + 2 * 4096 / 40 + 1024
        assert loaded["bytes_mapped_per_clip"] == pytest.approx(figures["file_mb"] * 1e6)


@pytest.mark.workflow
def test_the_packing_benchmark_packs_every_clip_and_copies_the_same_bytes(tmp_path):
    report = tmp_path / "packing.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "packing.py"), "--videos", "2", "--minutes", "0.2",
         "--size", "320x240", "--shard-mb", "0.2", "--json", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    figures = json.loads(report.read_text())
    # 300 frames at 25 fps, window 121 (16 latent frames each, 8x temporal): 2 full windows of 16
    # and 58 frames, 1 + 57 // 8 = 8 latent frames; clips of 16 tile the first 32 of 40.
    assert figures["clips"] == 2 * 2 and figures["tars"] > 1
    assert figures["pack_mb_s"] > 0 and figures["copy_mb_s"] > 0
    assert figures["pack_over_copy"] == pytest.approx(figures["pack_mb_s"] / figures["copy_mb_s"])
    assert figures["imports_peak_mib"] < figures["pack_peak_mib"] < figures["imports_peak_mib"] + 200


def run_shards_benchmark(tmp_path, *args) -> tuple[dict, float]:
    """The benchmark's JSON record, and its wall time measured here."""
    report = tmp_path / "shards.json"
    command = [sys.executable, str(REPO / "benchmarks" / "shards.py"), "--json", str(report), *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return json.loads(report.read_text()), wall


def test_the_planning_benchmark_counts_a_plan_per_shard(tmp_path):
    record, wall = run_shards_benchmark(
        tmp_path, "plan", "--rows", "250", "--shard-size", "100", "--per-video", "20"
    )
    plans = record["plans"]
    # 17 steps a shard (or a video): extract_wav and the plot, 3 DAC steps, 6 for each of the 2
    # presets; then the stand-in weights (2 Cosmos models, DAC), 4 tables, the report's overview
    # and 2 preset pages, the verdict (check_run) and `all`.
    assert [(p["rows"], p["shard_size"], p["jobs"]) for p in plans] == [
        (250, 100, 3 * 17 + 3 + 4 + 3 + 1 + 1),
        (20, 0, 20 * 17 + 3 + 4 + 3 + 1 + 1),
    ]
    assert all(p["seconds"] > 0 for p in plans) and sum(p["seconds"] for p in plans) < wall


def test_the_output_benchmark_writes_into_folders_of_each_size(tmp_path):
    record, wall = run_shards_benchmark(tmp_path, "outputs", "--files", "300", "0", "--writes", "5")
    assert record["writes"] == 5
    assert [f["files_in_folder"] for f in record["outputs"]] == [0, 300]
    seconds = [5 * f["seconds_per_output"] for f in record["outputs"]]  # five writes into each folder
    assert min(seconds) > 0 and sum(seconds) < wall


@pytest.mark.workflow
def test_the_clip_cost_benchmark_times_every_rule_in_every_run(tmp_path):
    # Two runs: the clips in a shard, and the same frames as one video (`--sampled-reports`
    # adds a third, one more overlay: test_shards runs a shard-mode sample of reports).
    record, wall = run_shards_benchmark(
        tmp_path, "throughput", "--clips", "2", "--shard-size", "2", "--cores", "1"
    )  # one core: the suite runs a process per core
    runs, one = record["runs"], record["runs"]["one_video"]
    assert set(runs) == {"clips", "one_video"}
    # The runs, one after another, within the benchmark's own time measured here.
    assert sum(run["seconds"] for run in runs.values()) < wall
    clips = runs["clips"]
    # One shard: 11 steps, 4 tables, the report's 2 pages, the verdict, `all`.
    assert clips["jobs"] == one["jobs"] == 11 + 4 + 2 + 1 + 1
    assert {rule.removeprefix("shard_") for rule in clips["stages"]} == set(one["stages"])
    assert sum(rule.startswith("shard_") for rule in clips["stages"]) == 11
    for run in (clips, one):  # a job's time, from Snakemake's log, within its run's
        assert all(0 <= seconds < run["seconds"] for seconds in run["stages"].values())
    # Snakemake and its jobs' processes, counted once they end: a model load is CPU seconds.
    assert clips["cpu_seconds"] > 1 and one["cpu_seconds"] > 1
    compared = set(runs) - {"one_video"}
    assert set(record["overhead_per_clip_s"]) == set(record["cpu_overhead_per_clip_s"]) == compared


@pytest.mark.workflow
def test_the_token_file_benchmark_reports_files_of_their_tensors_size(tmp_path):
    report = tmp_path / "token_files.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "token_files.py"), "--minutes", "1", "--size", "320x240",
         "--repeats", "1", "--folder", str(tmp_path), "--json", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    files = json.loads(report.read_text())["files"]
    # 1,500 frames at 25 fps: 12 windows of 121 (16 latent frames each), then 48 frames padded
    # to 49 (7 latent frames): 199 latent frames of 15 x 20, 16 bf16 channels for CV.
    latents = 199 * 15 * 20 * 16 * 2
    assert latents <= files["CV8x16x16 visual"]["tensor_bytes"] < latents + 4096
    for name, figures in files.items():  # the header at its real size: about a kilobyte, not 64 KiB
        assert 8 < figures["file_bytes"] - figures["tensor_bytes"] < 2048, name
    assert all(path.suffix != ".safetensors" for path in tmp_path.iterdir())  # removed after measuring

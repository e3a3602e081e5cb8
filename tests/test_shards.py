"""Shard mode: the same per-video files as per-video mode, from a job per shard and stage;
appended rows, a changed preset and a failing video redo only what they must."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_clip, on_small_disk, planned_jobs, run_workflow

from avtokens import load_tokens
from avtokens.data import AlignedClips
from avtokens.workflow import workflow_command

# A Cosmos model with DAC in both modes (the same scripts run in either, so comparing one preset
# and codec proves the modes alike; test_workflow runs Mimi per video, test_wan the Wan2.1 VAE),
# and the Wan2.1 VAE with Mimi in shard mode: every family and every codec in shard mode. The
# tests that change a run work on copies of the Cosmos one: what a shard job redoes is decided
# by avtokens.shards, the same for every family and codec, and the Wan2.1 VAE's and Mimi's jobs
# cost 3-6 CPU seconds more each (their imports: diffusers, transformers).
PRESETS = {"DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}}
OTHER_FAMILY = {"wan": {"family": "wan2.1", "window": 9, "codec": "mimi"}}
CLIP_FRAMES = [9, 14, 20]
PER_PRESET_STAGES = ["visual_encode", "visual_decode", "align_audio", "summarize", "mux", "compare_video"]
AUDIO_STAGES = ["audio_encode", "audio_decode", "summarize_audio"]
# What reads every video: remade whenever one changes.
tables = (
    "report/token_table.tsv",
    "report/audio_table.tsv",
    "report/quality_vs_tokens.png",
    "report/overview/",
    "report/presets/",
    "manifest.jsonl",
    "run_complete.json",
)


def write_sheet(path: Path, rows: dict[str, Path]) -> None:
    path.write_text("name\tpath\n" + "".join(f"{name}\t{source}\n" for name, source in rows.items()))


def made_files(results: Path) -> dict[str, bytes]:
    """Every file under results/ but the logs and the shard records (which differ by mode)."""
    return {
        str(path.relative_to(results)): path.read_bytes()
        for path in results.rglob("*")
        if path.is_file() and path.relative_to(results).parts[0] not in ("logs", "shards")
    }


def shard_jobs(shards: int, presets: int = 1, codecs: int = 1) -> dict[str, int]:
    return {"shard_extract_wav": shards * codecs, "shard_plot_frame_psnr": shards,
            **{f"shard_{stage}": shards * codecs for stage in AUDIO_STAGES},
            **{f"shard_{stage}": shards * presets for stage in PER_PRESET_STAGES}}  # fmt: skip


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory):
    """Three clips through the Cosmos preset in shards of two (the second shard holds one
    clip) and one job per video, and through the Wan2.1 VAE and Mimi in one shard, with the
    same stand-in weights (`run_workflow` copies them in)."""
    folder = tmp_path_factory.mktemp("shards")
    clips = {
        f"v{i}": make_clip(folder / f"c{i}.mp4", 48, 32, n, rate="25") for i, n in enumerate(CLIP_FRAMES)
    }
    write_sheet(folder / "videos.tsv", clips)
    overlay = {
        "videos": str(folder / "videos.tsv"),
        "weights": "demo",
        "presets": PRESETS,
        "run": list(PRESETS),
    }
    run_workflow(folder / "per_video", overlay)
    sharded = run_workflow(folder / "sharded", {**overlay, "shard_size": 2})
    other = {**overlay, "presets": OTHER_FAMILY, "run": list(OTHER_FAMILY), "shard_size": len(clips)}
    other_family = run_workflow(folder / "other_family", other)
    return folder, overlay, clips, sharded, other_family


def test_shards_write_the_same_files_as_per_video_jobs(both_modes):
    folder, _, clips, sharded, other_family = both_modes
    for run, shards in ((sharded, 2), (other_family, 1)):
        jobs = planned_jobs(run)
        assert {rule: n for rule, n in jobs.items() if rule.startswith("shard_")} == shard_jobs(shards)
        assert not any(rule in jobs for rule in ["visual_encode", "extract_wav", "mux"])  # no per-video job
    per_video, shards, other = (made_files(folder / name / "results")
                                for name in ("per_video", "sharded", "other_family"))  # fmt: skip
    # A clip: 7 a preset, 5 audio a codec, a plot; 3 tables, the manifest, the verdict; the report's
    # overview (page, plot, 2 tables, Snakemake's timestamp) and a page per preset (page, 3
    # comparisons, 3 plots, timestamp).
    for made in (per_video, shards, other):
        assert len(made) == 3 * (7 + 5 + 1) + 3 + 1 + 1 + 5 + 8
    # Byte for byte: the preset's and the audio's files, and the tables, plots and report made of them.
    assert sorted(shards) == sorted(per_video)
    assert [name for name in per_video if shards[name] != per_video[name]] == []
    for results in ("sharded", "other_family"):
        manifest = folder / results / "results" / "manifest.jsonl"
        assert len(manifest.read_text().splitlines()) == 3
    # The data loader reads any family's clips: the Wan VAE's 16-channel latents, 48x32 / 8.
    loader = AlignedClips(manifest, clip_length=2, preset="wan")
    clip = loader[0]
    assert loader.videos[0].family == "wan2.1" and clip["visual"].shape == (2, 4, 6, 16)
    assert loader.videos[0].codec == "mimi" and clip["audio_codes"].shape[1] == 8  # Mimi's codebooks
    assert clip["visual"].dtype == torch.bfloat16 and len(clip["audio_offsets"]) == 3
    for results, preset, videos in (
        ("sharded", "DV8x16x16", ["v0", "v1"]),
        ("other_family", "wan", list(clips)),
    ):
        shard = folder / results / "results" / "shards" / preset / "shard00000"
        record = json.loads((shard / "visual_encode.shard.json").read_text())
        assert sorted(record["done"]) == videos and record["failed"] == {} and record["not_run"] == {}
        log = folder / results / "results" / "logs" / "shards" / preset / "shard00000.visual_encode.log"
        assert log.read_text().count("holds stand-in weights") == 1  # the encoder loaded once for the shard


def copy_of_sharded_run(folder: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the shared shard-mode run to change (times kept, as the journals need)."""
    shutil.copytree(folder / "sharded", tmp_path / "w")
    return tmp_path / "w", tmp_path / "w" / "results"


def mtimes(results: Path) -> dict[str, int]:
    return {name: (results / name).stat().st_mtime_ns for name in made_files(results)}


def test_appended_rows_and_a_failing_video_redo_only_what_is_missing(both_modes, tmp_path):
    folder, overlay, clips, *_ = both_modes
    work, results = copy_of_sharded_run(folder, tmp_path)
    before = mtimes(results)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    extra = {name: make_clip(tmp_path / f"c{name[1]}.mp4", 48, 32, 11, rate="25") for name in ("v3", "v4")}
    # v3 fills shard00001 (which held v2); the broken one and v4 start shard00002.
    write_sheet(tmp_path / "videos.tsv", {**clips, "v3": extra["v3"], "broken": broken, "v4": extra["v4"]})
    overlay = {**overlay, "videos": str(tmp_path / "videos.tsv"), "shard_size": 2}

    dry = run_workflow(work, overlay, "--dry-run")
    jobs = planned_jobs(dry)
    assert {rule: n for rule, n in jobs.items() if rule.startswith("shard_")} == shard_jobs(2)  # 00001, 00002
    first_shard = sorted((results / "shards").glob("**/shard00000/*.shard.json"))
    first_shard_made = {path: path.stat().st_mtime_ns for path in first_shard}
    # The preset's 6 steps; the PSNR plot; DAC's wav and 3 steps.
    assert len(first_shard_made) == 6 + 1 + 1 + 3

    proc = run_workflow(work, overlay, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    lines = [line for line in text.splitlines() if line.startswith(f"ERROR video broken ({broken}): ")]
    assert len(lines) == 1  # at the end, one line for the video, naming each stage (and scope:
    # test_shard_runner has one failing in several presets and rates)
    assert all(stage in lines[0] for stage in ["extract_wav (44100hz)", "visual_encode (DV8x16x16)"])
    assert "1 video(s) failed inside shard jobs" in text
    table = (results / "shards" / "failed_videos.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["video", "path", "stage", "scope", "reason"]
    assert {tuple(row.split("\t")[:4]) for row in table[1:]} == {
        ("broken", str(broken), "extract_wav", "44100hz"),
        ("broken", str(broken), "visual_encode", "DV8x16x16"),
    }
    after = mtimes(results)
    assert {name: after[name] for name in before if not name.startswith(("report/", *tables))} == {
        name: t for name, t in before.items() if not name.startswith(("report/", *tables))
    }  # v0-v2: nothing made again
    for name in ("v3", "v4"):  # the rest of the shard finished
        for preset in PRESETS:
            assert (results / preset / "reconstructed" / f"{name}_combined.mp4").is_file()
    assert not any("broken" in name for name in after)
    assert {path: path.stat().st_mtime_ns for path in first_shard} == first_shard_made  # left as it was
    manifest = [json.loads(line) for line in (results / "manifest.jsonl").read_text().splitlines()]
    assert sorted((row["video"], row["preset"]) for row in manifest) == sorted(
        (v, p) for v in ["v0", "v1", "v2", "v3", "v4"] for p in PRESETS
    )

    # The next run, with the broken file mended and v4's source file made again, reruns the jobs
    # of their shard (and of nothing else): it makes those two videos and nothing else again
    # (v3's shard is left alone); then there is nothing to do.
    make_clip(broken, 48, 32, 11, rate="25")
    make_clip(extra["v4"], 48, 32, 13, rate="25")
    before = mtimes(results)
    retry = run_workflow(work, overlay)
    retried = planned_jobs(retry)
    assert {rule: n for rule, n in retried.items() if rule.startswith("shard_")} == shard_jobs(1)  # 00002
    settled = run_workflow(work, overlay, "--dry-run")
    assert "Nothing to be done" in settled.stdout + settled.stderr
    after = mtimes(results)
    remade = sorted(name for name in before if after[name] != before[name])
    assert all(name.startswith(tables) or "v4" in name for name in remade), remade
    videos_files = [name for name in remade if "v4" in name and not name.startswith(tables)]
    assert len(videos_files) == 7 + 5 + 1  # all of them
    made_now = sorted(name for name in after if "broken" in name and not name.startswith(tables))
    assert len(made_now) == 7 + 5 + 1 and not any("broken" in name for name in before)
    assert load_tokens(results / "DV8x16x16" / "tokens" / "v4_visual_tokens.safetensors").metadata["video"][
        "frame_count"] == 13  # fmt: skip
    log = (results / "logs" / "shards" / "DV8x16x16" / "shard00002.visual_encode.log").read_text()
    assert "2 videos, 2 to do, 0 done before" in log
    assert not (results / "shards" / "failed_videos.tsv").exists()


def test_a_changed_preset_reruns_its_shards_and_only_them(both_modes, tmp_path):
    folder, overlay, clips, *_ = both_modes
    work, results = copy_of_sharded_run(folder, tmp_path)
    before = mtimes(results)
    presets = {**PRESETS, "DV8x16x16": {**PRESETS["DV8x16x16"], "window": 9}}
    changed = {**overlay, "presets": presets, "shard_size": 2}
    jobs = planned_jobs(run_workflow(work, changed, "--dry-run"))
    assert {rule: n for rule, n in jobs.items() if rule.startswith("shard_")} == {
        **{f"shard_{stage}": 2 for stage in PER_PRESET_STAGES},
        "shard_plot_frame_psnr": 2,  # it plots every preset
    }
    run_workflow(work, changed)
    after = mtimes(results)
    redone = ("DV8x16x16/", "report/token_table.tsv", "report/quality_vs_tokens.png", "manifest.jsonl",
              "run_complete.json")  # fmt: skip
    for name, made in before.items():
        if name.startswith(("report/overview/", "report/presets/")):
            continue  # pages made again, of links to files made again or not
        remade = after[name] != made
        assert remade == (name.startswith(redone) or name.endswith("_psnr_per_frame.png")), name
    tokens = results / "DV8x16x16" / "tokens" / "v2_visual_tokens.safetensors"
    assert load_tokens(tokens).metadata["windows"]["frames"] == 9


def test_a_dataset_can_make_its_comparison_videos_and_plots_for_a_sample(both_modes, tmp_path):
    folder, overlay, clips, *_ = both_modes
    work, results = copy_of_sharded_run(folder, tmp_path)
    # As if those two steps had not run yet: their per-video files and records gone.
    for made in [
        *results.glob("*/reconstructed/*_comparison.mp4"),
        *results.glob("report/*_psnr_per_frame.png"),
        *results.glob("shards/*/*/compare_video.shard.*"),
        *results.glob("shards/*/*/plot_frame_psnr.shard.*"),
    ]:
        made.unlink()
    before = mtimes(results)
    sampled = {**overlay, "shard_size": 2, "report_videos_per_shard": 1}
    jobs = planned_jobs(run_workflow(work, sampled))
    assert {rule: n for rule, n in jobs.items() if rule.startswith("shard_")} == {
        "shard_compare_video": 2 * len(PRESETS),
        "shard_plot_frame_psnr": 2,
    }
    after = mtimes(results)
    kept = {name: made for name, made in before.items() if not name.startswith(tables)}
    assert {name: after[name] for name in kept} == kept  # nothing else made again
    looked_at = sorted(set(after) - set(before))  # the first video of each shard: v0 and v2
    assert looked_at == sorted(
        [f"{preset}/reconstructed/{video}_comparison.mp4" for preset in PRESETS for video in ("v0", "v2")]
        + [f"report/{video}_psnr_per_frame.png" for video in ("v0", "v2")]
    )
    record = json.loads(
        (results / "shards" / "DV8x16x16" / "shard00000" / "compare_video.shard.json").read_text()
    )
    assert list(record["done"]) == ["v0"] and record["not_run"] == {}
    # One job per video makes them for every video: the setting is refused there, not ignored.
    refused = run_workflow(work, {**overlay, "report_videos_per_shard": 1}, "--dry-run", check=False)
    assert refused.returncode != 0 and "set `shard_size` too" in refused.stdout + refused.stderr


def test_a_deleted_video_file_is_made_again_by_a_forced_rerun_of_its_step(both_modes, tmp_path):
    folder, overlay, *_ = both_modes
    work, results = copy_of_sharded_run(folder, tmp_path)
    overlay = {**overlay, "shard_size": 2}
    before, contents = mtimes(results), made_files(results)
    tokens = "DV8x16x16/tokens/v1_visual_tokens.safetensors"
    (results / tokens).unlink()
    # Snakemake does not see per-video files in shard mode: deleting one alone plans nothing.
    idle = run_workflow(work, overlay, "--dry-run")
    assert "Nothing to be done" in idle.stdout + idle.stderr
    run_workflow(work, overlay, "--forcerun", "shard_visual_encode")
    after = made_files(results)
    assert sorted(after) == sorted(contents) and after == contents  # the same bytes again
    remade = sorted(name for name, made in mtimes(results).items() if made != before.get(name))
    # v1: the tokens and every later step's files (its input changed); the plot of v1 and the
    # tables, which read them. Nothing of v0 (in the same forced job) or v2 (in the other one).
    assert tokens in remade and "DV8x16x16/reconstructed/v1_combined.mp4" in remade
    assert all("v1" in name or name.startswith(tables) for name in remade), remade


def test_videos_left_unfinished_by_a_run_that_ended_early_are_retried_by_the_next(both_modes, tmp_path):
    """What a run that stopped before its verdict (a job failed without --keep-going, or the
    node went) leaves: a shard job recorded a failed video, and nothing settled it. The next run
    retries that video at once, and finishes in one run when the cause has gone."""
    folder, overlay, *_ = both_modes
    work, results = copy_of_sharded_run(folder, tmp_path)
    overlay = {**overlay, "shard_size": 2}
    contents = made_files(results)
    record = results / "shards" / "DV8x16x16" / "shard00001" / "compare_video.shard.json"
    left = json.loads(record.read_text())
    left["failed"] = {"v2": "CUDA out of memory. Tried to allocate 2.00 GiB"}  # a GPU shared for a while
    del left["done"]["v2"]
    record.write_text(json.dumps(left))
    record.with_suffix(".unfinished").write_text("v2\n")
    comparison = "DV8x16x16/reconstructed/v2_comparison.mp4"
    (results / comparison).unlink()

    dry = run_workflow(work, overlay, "--dry-run")
    said = "The videos that 1 shard job(s) of an earlier run left unfinished are retried by a run (not a dry"
    assert said in dry.stderr and record.exists()
    # A run in progress here (its lock on the record) keeps it: this run stops on that lock.
    locks = work / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(f"{record.relative_to(work)}\n")
    assert run_workflow(work, overlay, check=False).returncode != 0 and record.exists()
    shutil.rmtree(locks)
    proc = run_workflow(work, overlay)
    assert "Retrying the videos that 1 shard job(s) of an earlier run left unfinished" in proc.stderr
    assert planned_jobs(proc)["shard_compare_video"] == 1
    log = (results / "logs" / "shards" / "DV8x16x16" / "shard00001.compare_video.log").read_text()
    assert "1 videos, 1 to do, 0 done before" in log
    assert made_files(results) == contents  # the same bytes again, and the verdict written
    assert not record.with_suffix(".unfinished").exists()
    settled = run_workflow(work, overlay, "--dry-run")
    assert "Nothing to be done" in settled.stdout + settled.stderr


# Inside a mount namespace, `on_small_disk` has mounted a 128 kB file system at the results'
# 44.1 kHz audio folder: three runs of one shard job, on it full, read-only, then grown.
FULL_THEN_READ_ONLY = """
import json, subprocess, sys
mountpoint, command = sys.argv[1], sys.argv[2:]
runs = []
for remount in (None, "remount,ro", "remount,rw,size=8m"):
    if remount:
        subprocess.run(["mount", "-o", remount, mountpoint], check=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    runs.append({"returncode": proc.returncode, "stderr": proc.stderr})
print(json.dumps(runs))
"""


def test_a_full_or_read_only_results_disk_stops_the_shard_job_and_the_run_after_it_finishes(tmp_path):
    """The errno path through the workflow: the shard job extracting the audio stops at the
    first video that cannot be written, in one line naming the folder, and blames no video;
    once the disk has room, the next run finishes the job without redoing the video done."""
    short = make_clip(tmp_path / "short.mp4", 48, 32, 10, rate="25")  # a 35 kB wav: fits
    long = make_clip(tmp_path / "long.mp4", 48, 32, 100, rate="25")  # a 353 kB wav: does not
    write_sheet(tmp_path / "videos.tsv", {"v0": short, "v1": long})
    overlay = {"videos": str(tmp_path / "videos.tsv"), "weights": "demo", "shard_size": 2,
               "presets": {"p": PRESETS["DV8x16x16"]}, "run": ["p"]}  # fmt: skip
    work = tmp_path / "w"
    folder = work / "results" / "audio" / "44100hz"  # the mount point
    record = "results/shards/audio/44100hz/shard00000/extract_wav.shard.json"
    command = workflow_command(work, overlay, record, cores=1)
    script = tmp_path / "runs.py"
    script.write_text(FULL_THEN_READ_ONLY)
    full, read_only, grown = json.loads(
        on_small_disk("128k", folder, [sys.executable, script, folder, *command])["stdout"]
    )
    # The folder as the config names it (relative); for the read-only disk, the folder that
    # could not be made in it.
    for run, cause in ((full, "No space left on device"), (read_only, "Read-only file system")):
        assert run["returncode"] != 0
        lines = [line for line in run["stderr"].splitlines() if "a fault of the machine" in line]
        assert len(lines) == 1 and lines[0].startswith(
            "ERROR shard_extract_wav (rate=44100, shard=shard00000)"
        )
        where, said = lines[0].split(": ", 1)[1].split(f": {cause}: ")
        assert where in ("results/audio/44100hz", "results/audio/44100hz/.v1.wav.partial")
        assert said.startswith("a fault of the machine, not of video v1; the job stopped")
        assert "ERROR video" not in run["stderr"] and "failed inside shard jobs" not in run["stderr"]
    assert grown["returncode"] == 0, grown["stderr"][-3000:]
    log = (
        work / "results" / "logs" / "shards" / "audio" / "44100hz" / "shard00000.extract_wav.log"
    ).read_text()
    assert "2 videos, 1 to do, 1 done before" in log  # the last run; v0 was made by the first
    assert not (work / "results" / "shards" / "failed_videos.tsv").exists()

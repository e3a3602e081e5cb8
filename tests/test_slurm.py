"""The workflow submitted through profiles/slurm to a real (single-node) SLURM cluster."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import REPO, make_clip, run_workflow
from slurm_cluster import SlurmCluster, unavailable_reason

GPU_RULES = {"visual_encode", "visual_decode", "audio_encode", "audio_decode"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no SLURM cluster here: {reason}")
    with SlurmCluster(tmp_path_factory.mktemp("slurm"), gpus=2) as running:  # a GPU for each run
        yield running


def run_on_slurm(
    cluster, folder, clips: int, targets=(), built_stand_ins=False, **settings
) -> dict[str, list[dict]]:
    """The workflow on `clips` clips through profiles/slurm in `folder`, up to `targets` (all
    of it by default); the cluster jobs it made, by rule (told apart from another run's by
    their working folder). The stand-in weights are built as cluster jobs too, unless
    `built_stand_ins` (then `run_workflow` copies them in)."""
    rows = [
        f"clip{i}\t{make_clip(folder / f'clip{i}.mp4', 64, 48, 12 + i, rate='25')}\n" for i in range(clips)
    ]
    (folder / "videos.tsv").write_text("name\tpath\n" + "".join(rows))
    overlay = {
        "videos": str(folder / "videos.tsv"),
        "weights": "demo",
        "presets": {"DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["DV8x16x16"],
        **settings,
    }
    # No accounting storage here: job states come from squeue. The rules' memory requests are
    # lowered to fit this small machine.
    small = [f"{prefix}{rule}:mem_mb=500" for rule in GPU_RULES for prefix in ("", "shard_")]
    options = ["--profile", str(REPO / "profiles" / "slurm"), "--slurm-status-command", "squeue",
               "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
               "--default-resources", "mem_mb=500", "--set-resources", *small]  # fmt: skip
    workdir = folder / "w"
    run_workflow(
        workdir, overlay, *targets, *options, env=cluster.env, cores=2, built_stand_ins=built_stand_ins
    )
    for i in range(clips):
        assert (workdir / "results" / "DV8x16x16" / "reconstructed" / f"clip{i}_combined.mp4").is_file()
    jobs = {}
    for job in cluster.jobs():
        if Path(job.get("WorkDir", "")) == workdir:
            rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
            jobs.setdefault(rule, []).append(job)
    local = {"all", "check_run", "report_overview", "report_preset_page"}
    assert not local & set(jobs)
    for rule, entries in jobs.items():
        assert all(job["JobState"] == "COMPLETED" for job in entries), (rule, entries)
        asks_gpu = all("gpu" in job.get("TresPerJob", "") for job in entries)
        assert asks_gpu == (rule.removeprefix("shard_") in GPU_RULES), (
            rule,
            [job.get("TresPerJob") for job in entries],
        )
    return jobs


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """One clip per video as far as its combined mp4 (each rule that asks for a GPU, and two
    that do not), and two in one shard with everything, run at the same time: the runs spend
    most of their time waiting for SLURM's status checks. A cluster job is a Snakemake of its
    own (about 5 CPU seconds here, outside the test processes' CPU), so the per-video run leaves
    out the steps whose shard-mode jobs, tables and stand-in weights the other run submits, and
    the shard-mode run has one shard (a job per shard and stage, whatever the number of shards:
    test_shards)."""
    combined = "results/DV8x16x16/reconstructed/clip0_combined.mp4"
    settings = {"per_video": {"clips": 1, "targets": [combined], "built_stand_ins": True},
                "shards": {"clips": 2, "shard_size": 2}}  # fmt: skip
    with ThreadPoolExecutor(len(settings)) as pool:
        futures = {
            name: pool.submit(run_on_slurm, cluster, tmp_path_factory.mktemp(name), **kwargs)
            for name, kwargs in settings.items()
        }
        return {name: future.result() for name, future in futures.items()}


def test_the_workflow_runs_as_slurm_jobs_and_gpu_rules_ask_for_a_gpu(runs):
    ran = set(runs["per_video"])
    assert ran == GPU_RULES | {"extract_wav", "mux"}, sorted(ran)


def test_in_shard_mode_each_shard_job_is_one_cluster_job(runs):
    jobs = runs["shards"]
    counts = {rule: len(entries) for rule, entries in jobs.items()}
    audio = ["extract_wav", "audio_encode", "audio_decode", "summarize_audio"]
    visual = ["visual_encode", "visual_decode", "align_audio", "summarize", "mux", "compare_video"]
    stages = [*audio, *visual, "plot_frame_psnr"]
    once = [
        "token_table",
        "audio_table",
        "plot_quality",
        "manifest",
    ]
    stand_ins = {"stand_in_weights": 2}  # the visual model's and DAC's, each a folder
    # A job for the shard's two videos in each stage.
    assert counts == {**{f"shard_{stage}": 1 for stage in stages}, **dict.fromkeys(once, 1), **stand_ins}

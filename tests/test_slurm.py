"""The workflow submitted through profiles/slurm to a real (single-node) SLURM cluster."""

import pytest
from helpers import REPO, make_clip, run_workflow
from slurm_cluster import SlurmCluster, unavailable_reason

GPU_RULES = {"visual_encode", "visual_decode", "audio_encode", "audio_decode"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no SLURM cluster here: {reason}")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def test_the_workflow_runs_as_slurm_jobs_and_gpu_rules_ask_for_a_gpu(cluster, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 64, 48, 12, rate="25")
    (tmp_path / "videos.tsv").write_text(f"name\tpath\nclip\t{clip}\n")
    overlay = {
        "videos": str(tmp_path / "videos.tsv"),
        "weights": "demo",
        "presets": {"DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["DV8x16x16"],
    }
    # No accounting storage here: job states come from squeue. The rules' memory requests are
    # lowered to fit this small machine.
    small = [f"{rule}:mem_mb=500" for rule in GPU_RULES]
    options = ["--profile", str(REPO / "profiles" / "slurm"), "--slurm-status-command", "squeue",
               "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "1",
               "--default-resources", "mem_mb=500", "--set-resources", *small]  # fmt: skip
    run_workflow(tmp_path / "w", overlay, *options, env=cluster.env)
    assert (tmp_path / "w" / "results" / "DV8x16x16" / "reconstructed" / "clip_combined.mp4").is_file()

    jobs = {}
    for job in cluster.jobs():
        rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0]
        jobs.setdefault(rule, []).append(job)
    ran = set(jobs)
    assert GPU_RULES <= ran and {"extract_wav", "mux", "summarize", "manifest"} <= ran, sorted(ran)
    assert "all" not in ran  # a local rule
    for rule, entries in jobs.items():
        assert all(job["JobState"] == "COMPLETED" for job in entries), (rule, entries)
        asks_gpu = all("gpu" in job.get("TresPerJob", "") for job in entries)
        assert asks_gpu == (rule in GPU_RULES), (rule, [job.get("TresPerJob") for job in entries])

"""A run killed in the middle of a job finishes on the next run, with the same bytes."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import make_clip, run_workflow

from avtokens.workflow import workflow_command

# The preset's token files: the visual encode, which is interrupted, and the audio encode that
# runs beside it (the steps after them are ordinary reruns).
TARGETS = tuple(f"results/p/tokens/clip_{part}_tokens.safetensors" for part in ("visual", "audio"))


def _outputs(results: Path) -> dict[str, bytes]:
    """Every result file but the logs (which carry times), by path."""
    return {
        str(p.relative_to(results)): p.read_bytes()
        for p in sorted(results.rglob("*"))
        if p.is_file() and "logs" not in p.parts
    }


# Loaded by every Python the run starts (sitecustomize, through PYTHONPATH): in the
# visual_encode job, once the token writer (a background thread) has written two windows,
# half-way through the file, the job's main thread says so and waits there, so the kill
# lands at the same point on any machine (and Ctrl-C reaches a thread that can stop).
PAUSE_HOOK = """
import faulthandler, os, signal, sys, threading, time
_stacks = open(os.path.join(os.environ["AVTOKENS_TEST_STACKS"], f"{os.getpid()}.txt"), "w")
faulthandler.register(signal.SIGUSR1, file=_stacks, all_threads=True)  # what a hung run was doing
if sys.argv and sys.argv[0].endswith(".visual_encode.py"):
    from avtokens import progress, tokenfile
    written = threading.Event()
    append, advance = tokenfile.TokenFileWriter.append, progress.Progress.advance
    def append_and_tell(self, chunk):
        append(self, chunk)
        if self.frames >= 6:  # two windows of 17 frames: 3 latent frames each
            self.file.flush()
            written.set()
    def advance_or_pause(self, amount):
        advance(self, amount)
        if self.done >= 3 * 17 and written.wait(timeout=60):  # three windows encoded, two written
            open(os.environ["AVTOKENS_TEST_PAUSED"], "w").close()
            time.sleep(600)
    tokenfile.TokenFileWriter.append = append_and_tell
    progress.Progress.advance = advance_or_pause
"""


def _hung(group: int, stacks: Path) -> str:
    """The processes of a run that did not stop, and the stacks of its Python threads."""
    listing = subprocess.run(["ps", "-o", "pid,stat,etime,args", "-g", str(group)], capture_output=True,
                             text=True).stdout  # fmt: skip
    os.killpg(group, signal.SIGUSR1)
    time.sleep(2)
    dumps = [f"--- {p.stem}\n{p.read_text()}" for p in sorted(stacks.glob("*.txt")) if p.stat().st_size]
    os.killpg(group, signal.SIGKILL)
    return listing + "\n".join(dumps)


def _interrupt_mid_encode(workdir: Path, overlay: dict, sig: signal.Signals) -> None:
    """Start the workflow and send `sig` to all its processes while the visual token file
    is half written (its temporary file holds two windows' latents)."""
    hook, paused, stacks = workdir / "pause_hook", workdir / "paused", workdir / "stacks"
    hook.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rm", "-rf", str(stacks)], check=True)
    stacks.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    paused.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(hook),
        "AVTOKENS_TEST_PAUSED": str(paused),
        "AVTOKENS_TEST_STACKS": str(stacks),
    }
    # Ctrl-C as in a terminal: a suite started in the background by a non-interactive shell
    # (a CI script, `make test &`) hands its children SIGINT ignored, and a run would then
    # never see it.
    proc = subprocess.Popen(
        # One core, as the runs it is compared with: thread counts decide bytes (README, Determinism).
        workflow_command(workdir, overlay, *TARGETS, cores=1),
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 300
    while not paused.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the encode never reached its pause"
        time.sleep(0.05)
    tokens = workdir / "results" / "p" / "tokens"
    partial = tokens / ".clip_visual_tokens.safetensors.partial"
    assert [p.stat().st_size > 0 for p in partial.iterdir()] == [True]  # latents streamed, no header yet
    os.killpg(proc.pid, sig)
    try:
        assert proc.wait(timeout=120) != 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the run did not stop after {sig.name}:\n{_hung(proc.pid, stacks)}") from None
    assert not (tokens / "clip_visual_tokens.safetensors").exists()


@pytest.mark.workflow
def test_an_interrupted_run_finishes_on_rerun_with_identical_bytes(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 64, 48, 5 * 17, rate="25")  # five windows: paused after three
    (tmp_path / "videos.tsv").write_text(f"name\tpath\nclip\t{clip}\n")
    overlay = {
        "videos": str(tmp_path / "videos.tsv"),
        "weights": "demo",
        "batch_megapixels": 0.001,  # a window per call: the file is written window by window
        "presets": {"p": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17}},
        "run": ["p"],
    }
    workdir, results = tmp_path / "w", tmp_path / "w" / "results"
    run_workflow(workdir, overlay, *TARGETS)
    uninterrupted = _outputs(results)

    # Ctrl-C: the jobs stop and clean up; the next run simply goes on.
    subprocess.run(["rm", "-rf", str(results)], check=True)
    _interrupt_mid_encode(workdir, overlay, signal.SIGINT)
    run_workflow(workdir, overlay, *TARGETS)
    assert _outputs(results) == uninterrupted

    # kill -9 of everything (a lost node, the OOM killer): the half-written file stays
    # behind under its temporary name, Snakemake's lock too; after `--unlock` the rerun
    # redoes the job, clears the leftover and gives the same bytes.
    subprocess.run(["rm", "-rf", str(results)], check=True)
    _interrupt_mid_encode(workdir, overlay, signal.SIGKILL)
    assert list((results / "p" / "tokens" / ".clip_visual_tokens.safetensors.partial").iterdir())
    assert "--unlock" in run_workflow(workdir, overlay, *TARGETS, check=False).stderr
    run_workflow(workdir, overlay, "--unlock")
    run_workflow(workdir, overlay, *TARGETS)
    assert _outputs(results) == uninterrupted
    assert not list(results.rglob(".*partial*"))

"""Test helpers: clips made with ffmpeg, and the workflow run as a user runs it."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from avtokens.media import probe, read_frame_windows, run_ffmpeg
from avtokens.workflow import REPO, workflow_command  # noqa: F401 (REPO: for the tests)


def make_clip(path: Path, width: int, height: int, frames: int, rate: str = "30000/1001",
              audio_channels: int | None = 2, audio_rate: int = 48000) -> Path:  # fmt: skip
    """An H.264 mp4 of moving test pattern with a tone (no audio when audio_channels is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate}"]
    if audio_channels:
        args += ["-f", "lavfi", "-i", f"sine=f=330:r={audio_rate}", "-ac", str(audio_channels),
                 "-c:a", "aac", "-shortest"]  # fmt: skip
    pix_fmt = "yuv444p" if width % 2 or height % 2 else "yuv420p"
    args += [
        "-frames:v",
        str(frames),
        "-c:v",
        "libx264",
        "-pix_fmt",
        pix_fmt,
        str(path),
    ]  # format from suffix
    run_ffmpeg(args, "making a test clip", path)
    return path


# A variable frame rate: frames at 0, 40, 80 ms, then every 200 ms (ffmpeg's -vf, with
# -fps_mode vfr); no constant rate explains them.
VFR_TIMESTAMPS = "setpts='if(lt(N,3),N*0.04,0.08+(N-2)*0.2)/TB'"


def count_frames(path: Path) -> int:
    return sum(len(w) for w in read_frame_windows(path, probe(path), 64))


@functools.cache
def stand_in_weights() -> Path:
    """Stand-in weights for every model of each tokenizer family's default release (Cosmos:
    all six factor pairs) and every audio codec, in the layout `weights: demo` builds under
    resources/demo_weights; built once per test process."""
    from avtokens.audio_codecs import AUDIO_CODECS
    from avtokens.visual_tokenizers import VISUAL_TOKENIZERS

    root = Path(tempfile.mkdtemp(prefix="avtokens-stand-ins-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for family in VISUAL_TOKENIZERS.values():
        for (kind, temporal, spatial), repo in family.models(family.default_release).items():
            family.write_stand_in(root / family.folder_names(repo)[0], kind, temporal, spatial)
    for codec in AUDIO_CODECS.values():
        codec.write_stand_in(root / codec.folder)
    return root


def place_stand_ins(workdir: Path) -> None:
    """`workdir`/resources/demo_weights as an earlier run in `workdir` would have left it (a
    copy of `stand_in_weights()`), unless there already: for a run whose subject is not
    building them (a job per model and run, about 7 CPU s for a Cosmos model and DAC)."""
    weights = Path(workdir) / "resources" / "demo_weights"
    if not weights.exists():
        shutil.copytree(stand_in_weights(), weights)


def uses_stand_ins(overlay: dict) -> bool:
    presets = overlay.get("presets", {}).values()
    return "demo" in (overlay.get("weights"), *(preset.get("weights") for preset in presets))


def run_workflow(
    workdir: Path,
    overlay: dict,
    *extra: str,
    check: bool = True,
    env: dict | None = None,
    prefix=(),
    cores: int = 1,
    built_stand_ins: bool = True,
) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with config.yaml plus `overlay`, as a user would (behind
    the command `prefix`, if any). One core by default: the suite runs a process per core, so
    a run's jobs share the machine with another module's; two jobs at once each would have
    four processes on two cores, and about 15% more CPU time for the same work (torch's
    threads waiting on each other). The runs that test jobs at once ask for two.

    With `built_stand_ins`, a run on stand-in weights in a new `workdir` finds them built, as
    after an earlier run (a copy of `stand_in_weights()`): building them is a job per model
    and run. The SLURM run, `make run` and the module client build their own, and dry runs
    that count those jobs pass False."""
    if built_stand_ins and uses_stand_ins(overlay):
        place_stand_ins(workdir)
    cmd = [*prefix, *workflow_command(workdir, overlay, *extra, cores=cores)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def whole_account(proc: subprocess.CompletedProcess) -> str:
    """What a run printed, and Snakemake's complete log of it, which it names at the end: the
    terminal of a run shows progress and failures (avtokens/terminal.py), the log has the job
    blocks and statistics too (a dry run prints them)."""
    text = proc.stdout + proc.stderr
    logs = re.findall(r"^Complete log\(s\): (.+)$", text, re.M)
    return text + "".join(Path(log).read_text() for log in logs)


# What the terminal must not show: Python's frames, Snakemake's job blocks and its exceptions.
TERMINAL_NOISE = re.compile(
    r'Traceback|File ".*", line \d+|^\s*(input|output|log|jobid|wildcards): |^(local)?rule \w+:'
    r"|Error in rule|RuleException|CalledProcessError|WorkflowError|Shell command",
    re.M,
)
_PROGRESS = re.compile(r"^\d+ of \d+ steps \(\d+%\) done$")


def after_the_progress(stderr: str) -> list[str]:
    """The terminal's lines after its last progress line (all of them if there is none, but
    Snakemake's first, which says that it read the workflow's profile)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("Using workflow")]
    last = max((n for n, line in enumerate(lines) if _PROGRESS.match(line)), default=-1)
    return lines[last + 1 :]


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from the "Job stats" table of a run (or a dry run)."""
    text = whole_account(proc)
    counts = {}
    if "Job stats:" in text:
        for line in text.split("Job stats:")[1].splitlines()[3:]:
            parts = line.split()
            if len(parts) != 2 or parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def max_bf16_steps(reference, other) -> float:
    """Largest difference between two tensors in bf16 steps (bf16 keeps 8 significant bits,
    so its step is 2^-7 of the value's power of two). Values smaller than the reference's RMS
    are measured in the step at that RMS: near zero, float rounding is relative to the sums
    that produced a value, not to the value."""
    import torch

    reference, other = reference.double(), other.double()
    floor = reference.square().mean().sqrt().clamp_min(torch.finfo(torch.bfloat16).tiny)
    size = torch.maximum(torch.maximum(reference.abs(), other.abs()), floor)
    step = torch.exp2(torch.floor(torch.log2(size)) - 7)
    return float(((other - reference).abs() / step).max())


ON_SMALL_DISK = """
import json, os, subprocess, sys
size, mountpoint, mode, copy_in, command = sys.argv[1:5] + [sys.argv[5:]]
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mountpoint], check=True)
for rel, src in json.loads(copy_in):
    os.makedirs(os.path.dirname(os.path.join(mountpoint, rel)), exist_ok=True)
    subprocess.run(["cp", src, os.path.join(mountpoint, rel)], check=True)
if mode == "ro":
    subprocess.run(["mount", "-o", "remount,ro", mountpoint], check=True)
proc = subprocess.run(command, capture_output=True, text=True)
files = [os.path.relpath(os.path.join(d, f), mountpoint) for d, _, fs in os.walk(mountpoint) for f in fs]
result = {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
print(json.dumps({**result, "files": sorted(files)}))
"""


def on_small_disk(size: str, mountpoint: Path, command: list, read_only: bool = False,
                  copy_in: dict | None = None) -> dict:  # fmt: skip
    """Run `command` with a file system of `size` (tmpfs: "64k", "2400k") mounted at
    `mountpoint`, seen by this command alone (a mount namespace: no root needed where user
    namespaces are allowed). `copy_in`: {path in it: file}, copied before it is made
    read-only (`read_only`). Returns the command's returncode, stdout and stderr, and the
    files left in the file system."""
    import json
    import sys

    mountpoint.mkdir(parents=True, exist_ok=True)
    namespace = (
        ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    )
    copies = json.dumps([[rel, str(src)] for rel, src in (copy_in or {}).items()])
    args = [size, str(mountpoint), "ro" if read_only else "rw", copies, *map(str, command)]
    proc = subprocess.run(
        [*namespace, sys.executable, "-c", ON_SMALL_DISK, *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise AssertionError(f"could not run on a small file system: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def sweep(samples: int, rate: int, seed: int = 0):
    """Test audio: a rising tone with a little noise, float32 [samples] at `rate`."""
    import math

    import torch

    t = torch.arange(samples) / rate
    noise = torch.randn(samples, generator=torch.Generator().manual_seed(seed))
    return (0.4 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.05 * noise).float()


def sample_reader(audio):
    """A codec's `read` over `audio`: samples [start, end), zeros past its end."""
    import torch

    def read(start, end):
        piece = audio[start:end]
        return torch.cat([piece, torch.zeros(end - start - len(piece))])

    return read


def benchmark(name: str):
    """The module of `benchmarks/<name>.py` (a script, not a package), to use its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token_files_manifest(folder: Path, presets: dict, videos: dict) -> Path:
    """`folder/manifest.jsonl` and its token files, written directly in the workflow's layout
    (random tokens: `benchmarks/data_loading.py`): every video (name -> width, height, frames
    at 25 fps) in every preset (name -> config entry)."""
    from fractions import Fraction

    from avtokens.presets import make_audio_setting, make_preset

    write_episode = benchmark("data_loading").write_episode
    rows = [
        write_episode(folder, make_preset(name, fields), make_audio_setting(name, fields), frames,
                      Fraction(25), width, height, video)
        for name, fields in presets.items()
        for video, (width, height, frames) in videos.items()
    ]  # fmt: skip
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "manifest.jsonl"


def tar_samples(tars) -> dict[str, dict[str, bytes]]:
    """A WebDataset's samples, read with `tarfile`: key -> extension -> bytes (the key is a
    member's path up to the first dot of its name); every member's key and extension is new."""
    found = {}
    for path in tars:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                folder, _, name = member.name.rpartition("/")
                stem, _, extension = name.partition(".")
                files = found.setdefault(f"{folder}/{stem}", {})
                assert extension not in files, member.name
                files[extension] = tar.extractfile(member).read()
    return found


def token_slice(visual_tokens, audio_tokens, start: int, length: int):
    """Latent frames [start, start + length) of a token file, as `safetensors` reads it, their
    frame spans, and the codes of exactly those frames with each frame's offset into them."""
    from safetensors import safe_open

    with safe_open(str(visual_tokens), framework="pt") as visual:
        name = "indices" if "indices" in visual.keys() else "latents"
        frames = visual.get_tensor(name)[0, start : start + length]
        spans = visual.get_tensor("frame_spans")[start : start + length]
    with safe_open(str(audio_tokens), framework="pt") as audio:
        ranges = audio.get_tensor("code_ranges")[start : start + length]
        codes = audio.get_tensor("codes")[0, int(ranges[0, 0]) : int(ranges[-1, 1])]
    offsets = [*(ranges[:, 0] - ranges[0, 0]).tolist(), int(ranges[-1, 1] - ranges[0, 0])]
    return frames, spans, codes, offsets

"""Which device a job runs on and, on a machine with several GPUs, which GPU.

Snakemake does not set CUDA_VISIBLE_DEVICES for local jobs, so with `--resources gpu=N`
every job would start on GPU 0. Each job therefore claims a GPU of its own through an
exclusive lock file per GPU, held until the process ends. Under SLURM a job sees only the
GPUs it was given, so there is nothing to choose.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
import time
from pathlib import Path

import torch

from avtokens import AvTokensError

log = logging.getLogger(__name__)
_held_claims = []  # open lock files; a claim lasts as long as the process


def runtime_record(device: torch.device) -> dict:
    """What computed the tokens, for the metadata: results are bit-identical only within
    one such combination (see the README on determinism)."""
    record = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        record |= {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                   "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    else:  # a CPU's kernels, and how they split sums over threads, round differently
        record |= {"threads": torch.get_num_threads(), "cpu": torch.backends.cpu.get_cpu_capability()}
    return record


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` without an index claims a free GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise AvTokensError(f"device '{name}' was asked for, but PyTorch sees no CUDA GPU")
    if device.index is None:
        count = torch.cuda.device_count()
        ids = [str(getattr(torch.cuda.get_device_properties(i), "uuid", i)) for i in range(count)]
        index, claim = claim_gpu(ids)
        _held_claims.append(claim)
        device = torch.device("cuda", index)
    return device


def claim_gpu(gpu_ids: list[str], lock_dir: Path | None = None, poll_seconds: float = 1.0):
    """Index of a GPU no other process on this machine holds, and the open lock file that
    holds it (close it to release). Waits while every GPU is taken."""
    if len(gpu_ids) <= 1:
        return 0, None
    lock_dir = Path(lock_dir or Path(tempfile.gettempdir()) / "avtokens-gpu-claims")
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for index, gpu in enumerate(gpu_ids):
            handle = open(lock_dir / f"{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            log.info("using GPU %d (%s)", index, gpu)
            return index, handle
        if not waiting:
            log.info("all %d GPUs are taken by other jobs; waiting for one", len(gpu_ids))
            waiting = True
        time.sleep(poll_seconds)

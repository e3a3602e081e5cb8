"""`avtokens.data` under DistributedDataParallel: the README's training loop run by torchrun on
two CPU ranks (gloo), a collective every step; persistent data-loader workers; the rank
shares; a set-up whose rank is unknown.

The token files are written directly (random tokens in the workflow's layout, by
benchmarks/data_loading.py), not by running the workflow: one video of 136 latent frames, 17
clips of 8, so that two ranks of the README's batches of 4 split them 9 and 8 clips, 3 and 2
batches, unless the shares are made even.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import REPO
from torch.utils.data import DataLoader

from avtokens.data import AlignedClips, AlignedClipStream, ClipSampler, collate_clips, rank_share
from avtokens.presets import make_preset

CLIPS, CLIP_LENGTH, BATCH = 17, 8, 4  # as the README's loop takes them: clip_length=8, batch_size=4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """results/example/manifest.jsonl with one DV8x16x16 video of 17 clips of 8 latent frames
    (766 frames of 32x32 at 25 fps), where the README's example reads it."""
    spec = importlib.util.spec_from_file_location("data_loading", REPO / "benchmarks" / "data_loading.py")
    data_loading = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data_loading)
    root = tmp_path_factory.mktemp("ddp")
    folder = root / "results" / "example"
    folder.mkdir(parents=True)
    preset = make_preset("DV8x16x16", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17})
    row = data_loading.write_episode(folder, preset, 766, Fraction(25), 32, 32)
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    assert len(AlignedClips(folder / "manifest.jsonl", clip_length=CLIP_LENGTH)) == CLIPS
    return root


def readme_loop() -> str:
    """The README's training example, as test_data.py's test_the_readme_example_runs_as_written runs it."""
    section = (REPO / "README.md").read_text().split("## Training on the tokens", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# Run by torchrun in each rank. The README's loop as written, with torch.utils.data.DataLoader
# replaced by one whose every step does an all_reduce (as DDP's backward does) and records the
# batch; then the stream form. Each rank writes what it saw to rank<r>.json.
TRAIN = r"""
import json, os, sys
from datetime import timedelta
import torch
import torch.distributed as dist
import torch.utils.data
from avtokens.data import AlignedClips, AlignedClipStream, ClipSampler

readme, persistent = open(sys.argv[1]).read(), sys.argv[2] == "persistent"
record = {"rank": int(os.environ["RANK"]), "loops": []}

try:  # made before init_process_group: this rank's share is unknown
    ClipSampler(range(17))
    record["refused"] = None
except RuntimeError as err:
    record["refused"] = str(err)

dist.init_process_group("gloo", timeout=timedelta(seconds=30))


class StepLoader(torch.utils.data.DataLoader):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("persistent_workers", persistent and kwargs.get("num_workers", 0) > 0)
        super().__init__(*args, **kwargs)

    def __iter__(self):
        seen = []
        record["loops"].append(seen)
        for batch in super().__iter__():
            yield batch
            total = torch.ones(1)
            dist.all_reduce(total)  # the step's collective: every rank must take as many steps
            assert int(total) == dist.get_world_size()
            seen.append(batch["start"].tolist())


torch.utils.data.DataLoader = StepLoader
namespace = {}
exec(compile(readme, "README.md", "exec"), namespace)  # epochs 0 and 1
sampler, loader = namespace["sampler"], namespace["loader"]
sampler.set_epoch(1, start=1 * 4)  # resumed after one batch of epoch 1, as the README says
for batch in loader:
    pass

stream = AlignedClipStream(namespace["clips"], batch_size=4, seed=0)
loader = StepLoader(stream, batch_size=None, num_workers=2)
for epoch in range(2):
    stream.set_epoch(epoch)
    for batch in loader:
        pass
stream.set_epoch(1, start_batch=1)
for batch in loader:
    pass
stream.set_epoch(2)
for batch in loader:
    pass

dist.barrier()
dist.destroy_process_group()
with open(f"rank{record['rank']}.json", "w") as f:
    json.dump(record, f)
"""


def torchrun(workdir, *args: str, timeout: float = 150) -> list[dict]:
    """`torchrun --standalone --nproc_per_node=2 train.py *args` in `workdir`; a run that does not
    end within `timeout` (a rank waiting in a collective) is killed, all its processes, and fails."""
    (workdir / "readme_loop.py").write_text(readme_loop())
    (workdir / "train.py").write_text(TRAIN)
    for rank in (0, 1):
        (workdir / f"rank{rank}.json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "train.py", "readme_loop.py", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.Popen(command, cwd=workdir, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(
            f"torchrun did not end within {timeout} s (a rank waits in a collective):\n{output[-4000:]}"
        )
    assert proc.returncode == 0, f"torchrun failed:\n{output[-6000:]}"
    return [json.loads((workdir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("workers", ["persistent", "fresh"])
def test_the_readme_loop_ends_under_torchrun_with_a_collective_per_step(workdir, workers):
    """Two ranks, 17 clips, batches of 4: both forms give each rank as many batches (9 clips
    each, one clip twice), cover every clip each epoch in a new order, and resume exactly;
    persistent workers or fresh ones each epoch."""
    ranks = torchrun(workdir, workers)
    everything = set(range(0, CLIPS * CLIP_LENGTH, CLIP_LENGTH))  # a clip is known by its start
    for rank in ranks:
        assert "WORLD_SIZE=2" in rank["refused"] and "init_process_group" in rank["refused"]
        assert "\n" not in rank["refused"]
        assert len(rank["loops"]) == 7  # README: 2 epochs and a resume; stream: 2, a resume, 1
    for form, loops in (("sampler", slice(0, 3)), ("stream", slice(3, 7))):
        per_rank = [rank["loops"][loops] for rank in ranks]
        for epoch in range(len(per_rank[0])):
            batches = [loops[epoch] for loops in per_rank]
            assert len(batches[0]) == len(batches[1]), (form, epoch, batches)
        for epoch in (0, 1):
            seen = [start for loops in per_rank for batch in loops[epoch] for start in batch]
            assert set(seen) == everything and len(seen) == CLIPS + 1, (form, epoch, seen)
            assert [len(batch) for batch in per_rank[0][epoch]] == [4, 4, 1]
        for loops in per_rank:
            assert loops[0] != loops[1], form  # a new order each epoch
            assert loops[2] == loops[1][1:], form  # resumed after one batch: the rest, exactly
        if form == "stream":  # the epoch after a resume starts at its beginning again
            assert all(len(loops[3]) == 3 and loops[3] not in (loops[0], loops[1]) for loops in per_rank)


def batch_starts(loader) -> list[list[int]]:
    return [batch["start"].tolist() for batch in loader]


def expected(clips, epoch) -> list[list[int]]:
    """Epoch `epoch` of rank 1 of 2 in batches of 3, as a stream made for it in this process says."""
    stream = AlignedClipStream(clips, batch_size=3, rank=1, world_size=2, seed=5)
    stream.set_epoch(epoch)
    return [[clips.clips[int(i)][1] for i in batch] for batch in stream.batches()]


@pytest.mark.parametrize("context", ["fork", "spawn", "no workers"])
def test_persistent_workers_give_each_epoch_its_order_and_resume_exactly(workdir, context):
    clips = AlignedClips(workdir / "results" / "example" / "manifest.jsonl", clip_length=CLIP_LENGTH)
    stream = AlignedClipStream(clips, batch_size=3, rank=1, world_size=2, seed=5)
    options = {} if context == "no workers" else {
        "num_workers": 2, "persistent_workers": True, "multiprocessing_context": context}  # fmt: skip
    loader = DataLoader(stream, batch_size=None, **options)
    orders = []
    for epoch in range(3):
        stream.set_epoch(epoch)
        orders.append(batch_starts(loader))
        assert orders[-1] == expected(clips, epoch) and len(orders[-1]) == 3
    assert len({json.dumps(order) for order in orders}) == 3
    stream.set_epoch(1, start_batch=2)
    assert batch_starts(loader) == orders[1][2:]
    stream.set_epoch(2)
    assert batch_starts(loader) == orders[2]
    if context == "fork":  # the map-style form: the sampler runs in the main process
        sampler = ClipSampler(clips, seed=5, rank=1, world_size=2)
        loader = DataLoader(clips, batch_size=3, sampler=sampler, collate_fn=collate_clips, **options)
        orders = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            orders.append(batch_starts(loader))
        sampler.set_epoch(1, start=3)
        assert orders[0] != orders[1] and batch_starts(loader) == orders[1][1:]


def test_rank_shares_are_equal_by_default_padded_from_the_start_of_the_order():
    for count in range(1, 40):
        for world in range(1, 6):
            order = rank_share(count, 3, 1, 0, 1).tolist()
            padded = [rank_share(count, 3, 1, rank, world).tolist() for rank in range(world)]
            size = -(-count // world)
            assert {len(share) for share in padded} == {size}
            taken = sorted(i for share in padded for i in share)
            assert set(taken) == set(range(count))  # no clip left out
            assert taken == sorted((order * world)[: size * world])  # the order, then its first few again
            dropped = [rank_share(count, 3, 1, rank, world, even="drop").tolist() for rank in range(world)]
            assert {len(share) for share in dropped} == {count // world}
            assert sorted(i for share in dropped for i in share) == sorted(order[: count // world * world])
            assert dropped == [
                rank_share(count, 3, 1, rank, world, even=True).tolist() for rank in range(world)
            ]
            uneven = [rank_share(count, 3, 1, rank, world, even=False).tolist() for rank in range(world)]
            assert sorted(i for share in uneven for i in share) == list(range(count))
            assert max(map(len, uneven)) - min(map(len, uneven)) <= 1
    with pytest.raises(ValueError, match="even must be 'pad', 'drop' or False, not 'yes'"):
        rank_share(10, 0, 0, 0, 2, even="yes")


def test_every_rank_has_as_many_batches_by_default(workdir):
    clips = AlignedClips(workdir / "results" / "example" / "manifest.jsonl", clip_length=2)
    for world in (2, 3, 4, 5):
        for batch_size in (1, 3, 4):
            for drop_last in (False, True):
                for epoch in (0, 1):
                    counts = set()
                    for rank in range(world):
                        stream = AlignedClipStream(clips, batch_size, rank=rank, world_size=world,
                                                   drop_last=drop_last)  # fmt: skip
                        stream.set_epoch(epoch)
                        sampler = ClipSampler(clips, rank=rank, world_size=world)
                        sampler.set_epoch(epoch)
                        batches = DataLoader(
                            range(len(clips)), batch_size, sampler=sampler, drop_last=drop_last
                        )
                        counts |= {len(stream), len(batches), len(list(batches))}
                    assert len(counts) == 1, (len(clips), world, batch_size, drop_last)


def test_a_rank_that_cannot_be_known_is_refused_with_one_line(workdir, monkeypatch):
    clips = AlignedClips(workdir / "results" / "example" / "manifest.jsonl", clip_length=CLIP_LENGTH)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    for make in (lambda **kw: ClipSampler(clips, **kw), lambda **kw: AlignedClipStream(clips, 4, **kw)):
        for given in ({}, {"rank": 1}):
            with pytest.raises(RuntimeError) as err:
                make(**given)
            message = str(err.value)
            assert "\n" not in message and "WORLD_SIZE=2 RANK=1 in the environment" in message
            assert message.endswith(
                "call torch.distributed.init_process_group() before making it, or pass rank= and world_size="
            )
        assert (make(rank=1, world_size=2).rank, make(world_size=1).world_size) == (1, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert (ClipSampler(clips).rank, ClipSampler(clips).world_size) == (0, 1)
    with pytest.raises(RuntimeError, match=r"^ClipSampler: world_size=2 without rank= .* pass rank="):
        ClipSampler(clips, world_size=2)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="^AlignedClipStream: LOCAL_RANK=1 in the environment"):
        AlignedClipStream(clips, 4)


def test_without_a_process_group_one_process_takes_every_clip(workdir):
    assert not any(name in os.environ for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    clips = AlignedClips(workdir / "results" / "example" / "manifest.jsonl", clip_length=CLIP_LENGTH)
    assert sorted(ClipSampler(clips)) == list(range(CLIPS))
    assert sorted(np.concatenate(AlignedClipStream(clips, 4).batches()).tolist()) == list(range(CLIPS))

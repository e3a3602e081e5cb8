"""`avtokens.data` under DistributedDataParallel and in one process: the README's training
loops, extracted from README.md, run for three epochs on videos of three sizes with two codecs'
presets, by torchrun on two CPU ranks (gloo, a collective every step) and in one process;
persistent data-loader workers; the rank shares; a set-up whose rank is unknown.

The token files are written directly (random tokens in the workflow's layout, by
benchmarks/data_loading.py), not by running the workflow: three videos of different sizes
(latent grids 2x2, 4x3 and 6x4: clips of three shapes), 17, 4 and 3 clips of 8 latent frames,
so that the README's batches of 4 make 5 + 1 + 1 = 7 batches of one shape each, which two
ranks share 4 and 3 unless the shares are made even.
"""

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import REPO, token_files_manifest
from torch.utils.data import DataLoader

from avtokens.data import (
    AlignedClips,
    AlignedClipStream,
    ClipBatchSampler,
    ClipSampler,
    collate_clips,
    epoch_batches,
    rank_share,
)

CLIP_LENGTH, BATCH = 8, 4  # as the README's loops take them: clip_length=8, batch_size=4
# name: (width, height, frames at 25 fps): 136, 36 and 24 latent frames of 17-frame windows
VIDEOS = {"square": (32, 32, 766), "small": (64, 48, 200), "wide": (96, 64, 130)}
CLIPS = {"square": 17, "small": 4, "wide": 3}
PRESETS = {  # the README's preset, and the same tokenizer with Mimi's audio
    "DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17},
    "DV8x16x16-mimi": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "codec": "mimi"},
}
MANIFEST = "results/example/manifest.jsonl"  # where the README's loops read it


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """results/example/manifest.jsonl with the three videos in both presets."""
    root = tmp_path_factory.mktemp("ddp")
    folder = root / "results" / "example"
    folder.mkdir(parents=True)
    token_files_manifest(folder, PRESETS, VIDEOS)
    for preset in PRESETS:
        clips = AlignedClips(root / MANIFEST, clip_length=CLIP_LENGTH, preset=preset)
        assert Counter(clips.videos[v].video for v, _, _ in clips.clips) == CLIPS
        assert len({clips.clip_shape(i) for i in range(len(clips))}) == 3
    return root


def readme_loops() -> list[str]:
    """The README's training examples, in one process and under torchrun, as written."""
    section = (REPO / "README.md").read_text().split("## Training on the tokens", 1)[1]
    return re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:2]


def for_preset(code: str, preset: str) -> str:
    """The README's code with its one `preset=` set to `preset` (the README's is DV8x16x16)."""
    assert code.count('preset="DV8x16x16"') == 1
    return code.replace('preset="DV8x16x16"', f"preset={preset!r}")


def test_the_readme_loop_runs_three_epochs_on_videos_of_three_sizes(workdir, monkeypatch):
    """In one process, on both codecs' presets: every batch stacks clips of one shape, every
    clip is seen once an epoch, the shapes mix through the epoch, each epoch in its own order."""
    seen = []

    class Recording(DataLoader):
        def __iter__(self):
            epoch = []
            seen.append(epoch)
            for batch in super().__iter__():
                epoch.append(
                    (batch["visual"].shape, list(zip(batch["video"], batch["start"].tolist(), strict=True)))
                )
                yield batch

    monkeypatch.chdir(workdir)
    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    single = readme_loops()[0]
    for preset in PRESETS:
        seen.clear()
        namespace = {}
        exec(compile(for_preset(single, preset), "README.md", "exec"), namespace)
        codebooks = 8 if preset.endswith("mimi") else 9
        assert namespace["batch"]["audio_codes"].shape[1] == codebooks
        clips = namespace["clips"]
        everything = Counter((clips.videos[v].video, start) for v, start, _ in clips.clips)
        assert len(seen) == 3
        for epoch in seen:
            assert Counter(clip for _, batch in epoch for clip in batch) == everything
            for shape, batch in epoch:
                assert {video for video, _ in batch} == {batch[0][0]} and shape[0] == len(batch)
            assert [len(batch) for _, batch in epoch].count(BATCH) == 5  # 4 of square's, small's 4
        assert seen[0] != seen[1] != seen[2]


# Run by torchrun in each rank: the README's torchrun loop as written (for the preset of the
# command line), with torch.utils.data.DataLoader replaced by one whose every step does an
# all_reduce (as DDP's backward does) and records the batch; then a resume, and the stream form.
# Each rank writes what it saw to rank<r>.json.
TRAIN = r"""
import json, os, sys
import torch
import torch.distributed as dist
import torch.utils.data
from avtokens.data import AlignedClips, AlignedClipStream, ClipBatchSampler

readme, workers = open(sys.argv[1]).read(), sys.argv[2]  # persistent, fresh (each epoch) or none
record = {"rank": int(os.environ["RANK"]), "loops": []}

try:  # made before init_process_group: this rank's share is unknown
    ClipBatchSampler(AlignedClips("results/example/manifest.jsonl", clip_length=8, preset="DV8x16x16"), 4)
    record["refused"] = None
except RuntimeError as err:
    record["refused"] = str(err)


class StepLoader(torch.utils.data.DataLoader):
    def __init__(self, *args, **kwargs):
        if workers == "none":  # batches made in the training process itself
            kwargs["num_workers"] = 0
        kwargs.setdefault("persistent_workers", workers == "persistent" and kwargs.get("num_workers", 0) > 0)
        super().__init__(*args, **kwargs)

    def __iter__(self):
        seen = []
        record["loops"].append(seen)
        for batch in super().__iter__():
            yield batch
            total = torch.ones(1)
            dist.all_reduce(total)  # the step's collective: every rank must take as many steps
            assert int(total) == dist.get_world_size()
            seen.append([[video, start] for video, start in zip(batch["video"], batch["start"].tolist())])


torch.utils.data.DataLoader = StepLoader
destroy, dist.destroy_process_group = dist.destroy_process_group, lambda: None  # the README's, at its end
namespace = {}
exec(compile(readme, "README.md", "exec"), namespace)  # epochs 0, 1 and 2
batches, loader = namespace["batches"], namespace["loader"]
batches.set_epoch(1, start_batch=1)  # resumed after one batch of epoch 1, as the README says
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
destroy()
with open(f"rank{record['rank']}.json", "w") as f:
    json.dump(record, f)
"""


def torchrun(workdir, preset: str, *args: str, timeout: float = 150) -> list[dict]:
    """`torchrun --standalone --nproc_per_node=2 train.py *args` in `workdir`; a run that does not
    end within `timeout` (a rank waiting in a collective) is killed, all its processes, and fails."""
    (workdir / "readme_loop.py").write_text(for_preset(readme_loops()[1], preset))
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


@pytest.mark.parametrize(
    ("preset", "workers"), [("DV8x16x16", "persistent"), ("DV8x16x16-mimi", "fresh"), ("DV8x16x16", "none")]
)
def test_the_readme_loop_ends_under_torchrun_with_a_collective_per_step(workdir, preset, workers):
    """Two ranks, 24 clips of three shapes in 7 batches of one shape: the README's loop and the
    stream give each rank as many batches (4 each, one batch twice), cover every clip each epoch
    in a new order, and resume exactly; persistent workers, fresh ones each epoch, or none.
    Each video is of its own size, as a bucket is: a batch of one video is of one bucket."""
    ranks = torchrun(workdir, preset, workers)
    everything = {
        (video, start) for video, n in CLIPS.items() for start in range(0, n * CLIP_LENGTH, CLIP_LENGTH)
    }
    for rank in ranks:
        assert "WORLD_SIZE=2" in rank["refused"] and "init_process_group" in rank["refused"]
        assert "\n" not in rank["refused"]
        assert len(rank["loops"]) == 8  # README: 3 epochs and a resume; stream: 2, a resume, 1
    for form, loops in (("sampler", slice(0, 4)), ("stream", slice(4, 8))):
        per_rank = [rank["loops"][loops] for rank in ranks]
        for epoch in range(len(per_rank[0])):
            batches = [loops[epoch] for loops in per_rank]
            assert len(batches[0]) == len(batches[1]), (form, epoch, batches)
        for epoch in (0, 1):
            seen = [tuple(clip) for loops in per_rank for batch in loops[epoch] for clip in batch]
            assert set(seen) == everything and len(per_rank[0][epoch]) == 4, (form, epoch, seen)
            assert all(
                len({video for video, _ in batch}) == 1 for loops in per_rank for batch in loops[epoch]
            )
        for loops in per_rank:
            assert loops[0] != loops[1], form  # a new order each epoch
        resumed = per_rank[0][3] if form == "sampler" else per_rank[0][2]
        assert resumed == per_rank[0][1][1:], form  # resumed after one batch: the rest, exactly
        if form == "stream":  # the epoch after a resume starts at its beginning again
            assert all(len(loops[3]) == 4 and loops[3] not in (loops[0], loops[1]) for loops in per_rank)


def batch_clips(loader) -> list[list[tuple[str, int]]]:
    return [list(zip(batch["video"], batch["start"].tolist(), strict=True)) for batch in loader]


def dataset(workdir, clip_length: int = CLIP_LENGTH) -> AlignedClips:
    return AlignedClips(workdir / MANIFEST, clip_length=clip_length, preset="DV8x16x16")


def expected(clips, epoch) -> list[list[tuple[str, int]]]:
    """Epoch `epoch` of rank 1 of 2 in batches of 3, as a stream made for it in this process says."""
    stream = AlignedClipStream(clips, batch_size=3, rank=1, world_size=2, seed=5)
    stream.set_epoch(epoch)
    clip = clips.clips
    return [[(clips.videos[clip[i][0]].video, clip[i][1]) for i in batch] for batch in stream.batches()]


@pytest.mark.parametrize("context", ["fork", "spawn", "no workers"])
def test_persistent_workers_give_each_epoch_its_order_and_resume_exactly(workdir, context):
    clips = dataset(workdir)
    stream = AlignedClipStream(clips, batch_size=3, rank=1, world_size=2, seed=5)
    options = {} if context == "no workers" else {
        "num_workers": 2, "persistent_workers": True, "multiprocessing_context": context}  # fmt: skip
    loader = DataLoader(stream, batch_size=None, **options)
    orders = []
    for epoch in range(3):
        stream.set_epoch(epoch)
        orders.append(batch_clips(loader))
        assert orders[-1] == expected(clips, epoch) and len(orders[-1]) == 5  # (6 + 2 + 1 padded to 10) / 2
    assert len({json.dumps(order) for order in orders}) == 3
    stream.set_epoch(1, start_batch=2)
    assert batch_clips(loader) == orders[1][2:]
    stream.set_epoch(2)
    assert batch_clips(loader) == orders[2]
    if context == "fork":  # the map-style form: the batch sampler runs in the main process
        batches = ClipBatchSampler(clips, 3, seed=5, rank=1, world_size=2)
        loader = DataLoader(clips, batch_sampler=batches, collate_fn=collate_clips, **options)
        for epoch in range(3):
            batches.set_epoch(epoch)
            assert batch_clips(loader) == orders[epoch]  # the stream's batches
        batches.set_epoch(1, start_batch=1)
        assert batch_clips(loader) == orders[1][1:]


def test_epoch_batches_hold_one_shape_each_and_every_clip_once_in_a_seeded_order():
    rng = np.random.default_rng(0)
    for trial in range(200):
        count, batch_size = int(rng.integers(0, 40)), int(rng.integers(1, 6))
        shapes = [int(k) for k in rng.integers(0, int(rng.integers(1, 5)), count)]
        seed, epoch = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        whole = epoch_batches(shapes, batch_size, seed, epoch, 0, 1)
        assert [b.tolist() for b in whole] == [
            b.tolist() for b in epoch_batches(shapes, batch_size, seed, epoch, 0, 1)
        ]
        assert sorted(i for b in whole for i in b.tolist()) == list(range(count))
        one_each = epoch_batches(shapes, count or 1, seed, epoch, 0, 1)
        place = {i: n for n, i in enumerate(rank_share(count, seed, epoch, 0, 1).tolist())}
        firsts = [place[int(b[0])] for b in whole]
        assert firsts == sorted(firsts), trial  # batches in the order of their first clips
        for batch in whole:
            assert len({shapes[i] for i in batch.tolist()}) == 1 and 1 <= len(batch) <= batch_size
            assert [place[i] for i in batch.tolist()] == sorted(place[i] for i in batch.tolist())
        full = sum(-(-shapes.count(k) // batch_size) for k in set(shapes))  # a part batch per shape at most
        assert len(whole) == full and len(one_each) == len(set(shapes))
        dropped = epoch_batches(shapes, batch_size, seed, epoch, 0, 1, drop_last=True)
        assert all(len(b) == batch_size for b in dropped)
        assert len(dropped) == sum(shapes.count(k) // batch_size for k in set(shapes))
        for world in (2, 3, 4):
            padded = [epoch_batches(shapes, batch_size, seed, epoch, r, world) for r in range(world)]
            assert {len(share) for share in padded} == {-(-full // world)}
            taken = [i for share in padded for b in share for i in b.tolist()]
            assert set(taken) == set(range(count)) and len(taken) - count <= (world - 1) * batch_size
            drop = [
                epoch_batches(shapes, batch_size, seed, epoch, r, world, even="drop") for r in range(world)
            ]
            assert {len(share) for share in drop} == {full // world}
            uneven = [
                epoch_batches(shapes, batch_size, seed, epoch, r, world, even=False) for r in range(world)
            ]
            assert sorted(i for share in uneven for b in share for i in b.tolist()) == list(range(count))
            assert max(map(len, uneven)) - min(map(len, uneven)) <= 1
    assert [b.tolist() for b in epoch_batches([0] * 5, 2, 0, 0, 0, 1, shuffle=False)] == [[0, 1], [2, 3], [4]]
    assert [b.tolist() for b in epoch_batches([0, 1, 0, 1], 2, 0, 0, 0, 1, shuffle=False)] == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="batch_size must be positive, not 0"):
        epoch_batches([0], 0, 0, 0, 0, 1)


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
    clips = dataset(workdir, clip_length=2)
    for world in (2, 3, 4, 5):
        for batch_size in (1, 3, 4):
            for drop_last in (False, True):
                for epoch in (0, 1):
                    counts = set()
                    for rank in range(world):
                        stream = AlignedClipStream(clips, batch_size, rank=rank, world_size=world,
                                                   drop_last=drop_last)  # fmt: skip
                        stream.set_epoch(epoch)
                        batches = ClipBatchSampler(clips, batch_size, rank=rank, world_size=world,
                                                   drop_last=drop_last)  # fmt: skip
                        batches.set_epoch(epoch)
                        sampler = ClipSampler(clips, rank=rank, world_size=world)
                        sampler.set_epoch(epoch)
                        sampled = DataLoader(
                            range(len(clips)), batch_size, sampler=sampler, drop_last=drop_last
                        )
                        counts |= {len(stream), len(batches), len(list(batches))}
                        counts_of_clips = {len(sampled), len(list(sampled))}
                        assert len(counts_of_clips) == 1
                        counts |= {("clips", *counts_of_clips)}
                    assert len(counts) == 2, (len(clips), world, batch_size, drop_last, counts)


def test_a_rank_that_cannot_be_known_is_refused_with_one_line(workdir, monkeypatch):
    clips = dataset(workdir)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    makers = (lambda **kw: ClipSampler(clips, **kw), lambda **kw: ClipBatchSampler(clips, 4, **kw),
              lambda **kw: AlignedClipStream(clips, 4, **kw))  # fmt: skip
    for make in makers:
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
    with pytest.raises(RuntimeError, match=r"^ClipBatchSampler: world_size=2 without rank= .* pass rank="):
        ClipBatchSampler(clips, 4, world_size=2)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="^AlignedClipStream: LOCAL_RANK=1 in the environment"):
        AlignedClipStream(clips, 4)


def test_without_a_process_group_one_process_takes_every_clip(workdir):
    assert not any(name in os.environ for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))
    clips = dataset(workdir)
    everything = list(range(sum(CLIPS.values())))
    assert sorted(ClipSampler(clips)) == everything
    assert sorted(i for batch in ClipBatchSampler(clips, 4) for i in batch) == everything
    assert sorted(np.concatenate(AlignedClipStream(clips, 4).batches()).tolist()) == everything

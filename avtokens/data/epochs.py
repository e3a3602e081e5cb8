"""An epoch's order of clips and each rank's share of it: the arithmetic the samplers and the
stream share, and where a process's rank and world size come from."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence

import numpy as np
import torch


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of `count` clips in an epoch: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(count)
    return np.random.default_rng([seed, epoch]).permutation(count)


# What torchrun, torch.distributed.launch and the launchers built on them set in each process.
_LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def _launched_as_one_of_several() -> str:
    """The launcher's variables, as "WORLD_SIZE=2 RANK=1", when they say that this process is
    one of several; "" otherwise."""
    values = {}
    for name in _LAUNCHER_VARIABLES:
        try:
            values[name] = int(os.environ[name])
        except (KeyError, ValueError):
            continue
    several = values.get("WORLD_SIZE", 1) > 1 or values.get("RANK", 0) > 0 or values.get("LOCAL_RANK", 0) > 0
    return " ".join(f"{name}={value}" for name, value in values.items()) if several else ""


def rank_and_world(rank: int | None, world_size: int | None, who: str) -> tuple[int, int]:
    """Rank and world size: as given, else from torch.distributed. Without a process group,
    a process that a launcher says is one of several, or a world_size > 1 without rank=,
    is refused: taking rank 0 of 1 there would give every rank every clip in the same order."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    else:
        advice = "call torch.distributed.init_process_group() before making it, or pass rank= and world_size="
        if world_size is None:
            launched = _launched_as_one_of_several()
            if launched:
                raise RuntimeError(f"{who}: {launched} in the environment but torch.distributed is not "
                                   f"initialised, so this process's rank is unknown: {advice}")  # fmt: skip
            world_size = 1
        if rank is None:
            if world_size > 1:
                raise RuntimeError(
                    f"{who}: world_size={world_size} without rank= and torch.distributed is not "
                    f"initialised, so this process's rank is unknown: {advice}"
                )
            rank = 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def even_mode(even: str | bool) -> str | bool:
    """`even` checked: "pad", "drop" or False."""
    if even is True:
        return "drop"  # what even=True meant before "pad" was the default
    if even is False or even in ("pad", "drop"):
        return even
    raise ValueError(f"even must be 'pad', 'drop' or False, not {even!r}")


def rank_share(count: int, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool = True,
               even: str | bool = "pad") -> np.ndarray:  # fmt: skip
    """Clip indices of one rank in an epoch: every world_size-th of the epoch's order.

    `even` makes the shares equal, as DistributedDataParallel needs (every rank must take as
    many steps): "pad" (default) extends the order by its own first clips to a multiple of
    world_size, so no clip is left out and at most world_size - 1 are repeated (a different
    few each epoch); "drop" (or True) leaves out the last count % world_size clips of the
    order (a different few each epoch); False gives shares that differ by at most one clip,
    every clip once."""
    even = even_mode(even)
    order = epoch_order(count, seed, epoch, shuffle)
    if even == "pad" and count % world_size:
        order = np.resize(order, -(-count // world_size) * world_size)  # repeats it from the start
    elif even == "drop":
        order = order[: count - count % world_size]
    return order[rank::world_size]


def epoch_batches(shapes: Sequence[Hashable], batch_size: int, seed: int, epoch: int, rank: int,
                  world_size: int, shuffle: bool = True, even: str | bool = "pad",
                  drop_last: bool = False) -> list[np.ndarray]:  # fmt: skip
    """Batches of clip indices of one rank in an epoch, each of clips of one shape
    (`shapes[i]`: clip i's; give every clip the same key to batch regardless of shape).

    Each shape's clips, in the epoch's order (`epoch_order`), are cut into batches of
    `batch_size` (a shape's last batch may be smaller; `drop_last` leaves such batches out);
    the batches follow each other in the order of their first clips, so the shapes are mixed
    through the epoch; rank r takes every world_size-th batch. `even` makes the numbers of
    batches equal, as DistributedDataParallel needs: "pad" (default) extends the epoch's
    batches by its own first ones to a multiple of world_size, "drop" (or True) leaves the
    last few out, False gives numbers that differ by at most one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    even = even_mode(even)
    order = epoch_order(len(shapes), seed, epoch, shuffle)
    by_shape: dict[Hashable, list[int]] = {}
    for index in order.tolist():
        by_shape.setdefault(shapes[index], []).append(index)
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    batches = [
        np.array(members[start : start + batch_size])
        for members in by_shape.values()
        for start in range(0, len(members), batch_size)
        if not (drop_last and len(members) - start < batch_size)
    ]
    batches.sort(key=lambda batch: place[batch[0]])
    if even == "pad" and batches and len(batches) % world_size:
        batches = [batches[i % len(batches)] for i in range(-(-len(batches) // world_size) * world_size)]
    elif even == "drop":
        batches = batches[: len(batches) - len(batches) % world_size]
    return batches[rank::world_size]

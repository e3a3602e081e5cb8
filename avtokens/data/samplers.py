"""How a rank's epoch reaches a DataLoader: batches of clip indices (`ClipBatchSampler`), clips
one by one (`ClipSampler`), or whole collated batches made in the workers (`AlignedClipStream`).
All three take their order and share from `avtokens.data.epochs`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, Sampler, get_worker_info

from avtokens.data.collate import collate_clips
from avtokens.data.epochs import epoch_batches, even_mode, rank_and_world, rank_share

if TYPE_CHECKING:
    from avtokens.data.clips import AlignedClips


class ClipBatchSampler(Sampler[list[int]]):
    """The batches of this rank for `AlignedClips` with a DataLoader (`batch_sampler=`), in the
    epoch's seeded order, each batch of clips of one shape (`epoch_batches`), so
    `collate_clips` stacks them whatever the sizes of the videos; `set_epoch` before each
    epoch, as with DistributedSampler, and `set_epoch(epoch, start_batch=k)` to resume after k
    batches of it.

    Rank and world size: as given, else from torch.distributed (refused under a launcher
    before `init_process_group`). `even` (see `epoch_batches`): "pad" (default) gives every
    rank as many batches, so DistributedDataParallel's collectives pair up. `same_shape=False`
    batches clips of any shape (collate them with `collate_padded`). The sampler runs in the
    main process, so `set_epoch` holds with persistent workers too."""

    def __init__(self, dataset: AlignedClips, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, even: str | bool = "pad",
                 drop_last: bool = False, same_shape: bool = True, start_batch: int = 0):  # fmt: skip
        self.shapes = _batch_keys(dataset, same_shape)
        self.batch_size, self.seed, self.shuffle, self.even = batch_size, seed, shuffle, even_mode(even)
        self.drop_last, self.epoch, self.start_batch = drop_last, 0, start_batch
        self.rank, self.world_size = rank_and_world(rank, world_size, "ClipBatchSampler")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _batches(self) -> list[np.ndarray]:
        batches = epoch_batches(self.shapes, self.batch_size, self.seed, self.epoch, self.rank,
                                self.world_size, self.shuffle, self.even, self.drop_last)  # fmt: skip
        return batches[self.start_batch :]

    def __iter__(self):
        return (batch.tolist() for batch in self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _batch_keys(dataset: AlignedClips, same_shape: bool) -> list[Hashable]:
    """What clips must share to be batched together: their shape, or nothing."""
    return [dataset.clip_shape(i) if same_shape else None for i in range(len(dataset))]


class ClipSampler(Sampler[int]):
    """The clips of this rank for `AlignedClips` with a DataLoader, one by one in the epoch's
    seeded order, whatever their shapes: batch them with `collate_padded` (clips of one shape
    per batch: `ClipBatchSampler`). `set_epoch` before each epoch, as with
    DistributedSampler. `start`: clips of this rank's order to skip, to resume an epoch
    (batches done x batch size).

    Rank and world size: as given, else from torch.distributed (refused under a launcher
    before `init_process_group`). `even` (see `rank_share`): "pad" (default) gives every rank
    as many clips, hence as many batches, so DistributedDataParallel's collectives pair up;
    "drop" does so by leaving clips out; False: shares may differ by one clip. The sampler
    runs in the main process, so `set_epoch` holds with persistent workers too."""

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, even: str | bool = "pad", start: int = 0):  # fmt: skip
        self.count = len(dataset)
        self.seed, self.shuffle, self.even, self.start, self.epoch = seed, shuffle, even_mode(even), start, 0
        self.rank, self.world_size = rank_and_world(rank, world_size, "ClipSampler")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> np.ndarray:
        share = rank_share(
            self.count, self.seed, self.epoch, self.rank, self.world_size, self.shuffle, self.even
        )
        return share[self.start :]

    def __iter__(self):
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


class AlignedClipStream(IterableDataset):
    """`AlignedClips` as an iterable of whole batches, sharded by rank and by data-loader
    worker: batch k of this rank's epoch is made by worker k mod workers, so a DataLoader
    (batch_size=None) yields them in order and `start_batch` resumes exactly.

    The batches are those of `ClipBatchSampler` (`epoch_batches`): clips of one shape each
    unless `same_shape=False` (then collate with `collate_padded`); rank, world size, `even`
    and `drop_last` as there, so by default every rank has as many batches. The epoch and
    start batch are kept in shared memory, so `set_epoch(epoch, start_batch=k)` reaches the
    data-loader workers, persistent ones (`persistent_workers=True`, which keep their copy of
    this object from the first epoch on) and spawned ones included: each worker reads them
    when its epoch begins."""

    def __init__(self, dataset: AlignedClips, batch_size: int, collate=None, seed: int = 0,
                 shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 even: str | bool = "pad", drop_last: bool = False, same_shape: bool = True,
                 start_batch: int = 0):  # fmt: skip
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate or collate_clips
        self.seed, self.shuffle, self.even, self.drop_last = seed, shuffle, even_mode(even), drop_last
        self.shapes = _batch_keys(dataset, same_shape)
        self.rank, self.world_size = rank_and_world(rank, world_size, "AlignedClipStream")
        # [epoch, start_batch]: inherited by forked workers, passed to spawned ones as a handle
        # to the same memory (torch.multiprocessing pickles shared tensors so).
        self._position = torch.tensor([0, start_batch], dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._position[0] = epoch

    @property
    def start_batch(self) -> int:
        return int(self._position[1])

    @start_batch.setter
    def start_batch(self, start_batch: int) -> None:
        self._position[1] = start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self._position.copy_(torch.tensor([epoch, start_batch], dtype=torch.int64))

    def batches(self) -> list[np.ndarray]:
        """This rank's batches of clip indices in this epoch, from `start_batch` on."""
        epoch, start_batch = self._position.tolist()
        batches = epoch_batches(self.shapes, self.batch_size, self.seed, epoch, self.rank, self.world_size,
                                self.shuffle, self.even, self.drop_last)  # fmt: skip
        return batches[start_batch:]

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        # Read now, when this worker's epoch begins: a persistent worker is the same process
        # epoch after epoch, and only the shared memory tells it which epoch this is.
        batches = self.batches()
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        return (self.collate([self.dataset[int(i)] for i in batch]) for batch in batches[worker_id::workers])

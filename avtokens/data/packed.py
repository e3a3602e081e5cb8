"""Streaming a packed dataset (`avtokens.packing`): clips read from its tars in sequence, every
rank its own tars, resumable from a sample count."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from torch.utils.data import IterableDataset, get_worker_info

from avtokens import AvTokensError
from avtokens.data.epochs import epoch_order, even_mode, rank_and_world
from avtokens.data.packed_sample import decode_sample


class PackedClips(IterableDataset):
    """The clips of one split of a packed dataset folder (`packed/<preset>`, which its
    `dataset.json` describes), as `decode_sample` makes them; batch them with `collate_clips`
    (or `collate_padded` for clips of several shapes).

    Each epoch the tars are shuffled by (seed, epoch) and rank r of n reads every n-th of them
    from start to end: one open file at a time, read in sequence (the clips in a tar were
    shuffled across videos when it was packed). `even` makes the ranks' shares equal, as
    DistributedDataParallel needs: "pad" (default) repeats a rank's first clips up to the
    largest share, "drop" stops every rank at the smallest, False leaves them as they are.

    Data-loader workers take whole batches of `batch_size` (the DataLoader's) in turn, so the
    clips a loader yields are the rank's sequence in order and `set_epoch(epoch, start)`
    resumes after the first `start` of them (the samples a rank took, as a checkpoint counts
    them); the clips before it are skipped without reading their data."""

    def __init__(
        self,
        folder,
        split: str = "train",
        batch_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        even: str | bool = "pad",
    ):
        folder = Path(folder)
        try:
            index = json.loads((folder / "dataset.json").read_text())
        except OSError as err:
            raise AvTokensError(
                f"{folder}: not a packed dataset ({err.strerror or err}); make it with `snakemake pack`"
            ) from None
        self.tars = [(folder / tar["path"], tar["samples"]) for tar in index["splits"].get(split, [])]
        self.rank, self.world_size = rank_and_world(rank, world_size, "PackedClips")
        if len(self.tars) < self.world_size:
            raise AvTokensError(
                f"{folder}: {len(self.tars)} {split} tar(s) for {self.world_size} ranks, and a "
                "rank reads whole tars: pack with a smaller pack.shard_bytes"
            )
        self.batch_size, self.seed, self.shuffle, self.even = batch_size, seed, shuffle, even_mode(even)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _shares(self) -> list[list[tuple[Path, int]]]:
        order = epoch_order(len(self.tars), self.seed, self.epoch, self.shuffle)
        return [[self.tars[i] for i in order[r :: self.world_size]] for r in range(self.world_size)]

    def __len__(self) -> int:
        """The clips this rank yields in the epoch (from its start)."""
        counts = [sum(samples for _, samples in share) for share in self._shares()]
        length = {"pad": max(counts), "drop": min(counts)}.get(self.even, counts[self.rank])
        return max(0, length - self.start)

    def __iter__(self):
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        share, remaining = self._shares()[self.rank], len(self)
        position = 0
        while remaining > 0:  # "pad": a rank with fewer clips goes round its tars again
            for path, _ in share:
                with tarfile.open(path) as tar:
                    for members in _samples(tar):
                        if position >= self.start:
                            if ((position - self.start) // self.batch_size) % workers == worker_id:
                                yield decode_sample(_read(tar, members))
                            remaining -= 1
                            if remaining == 0:
                                return
                        position += 1


def _samples(tar: tarfile.TarFile):
    """The members of each sample in turn (a sample's files are consecutive, as WebDataset has
    them); reading only the headers."""
    key, members = None, []
    for member in tar:
        if not member.isfile():
            continue
        folder, _, name = member.name.rpartition("/")
        this = f"{folder}/{name.partition('.')[0]}"
        if this != key and members:
            yield members
            members = []
        key = this
        members.append(member)
    if members:
        yield members


def _read(tar: tarfile.TarFile, members: list[tarfile.TarInfo]) -> dict[str, bytes]:
    return {
        member.name.rpartition("/")[2].partition(".")[2]: tar.extractfile(member).read() for member in members
    }

"""Training batches from token files: clips of L consecutive latent frames of one video and
preset, each latent frame with its visual tokens and exactly its audio codes.

    clips = AlignedClips("results/manifest.jsonl", clip_length=16, preset="DV8x16x16")
    batches = ClipBatchSampler(clips, batch_size=8, seed=0)  # rank and world size from torch.distributed
    loader = DataLoader(clips, batch_sampler=batches, num_workers=4, collate_fn=collate_clips)

Files are read by byte range (`TokenFileReader`), never whole. The order of an epoch is a
permutation seeded by (seed, epoch). Videos of different sizes give clips of different latent
shapes, which cannot be stacked: by default a batch holds clips of one shape (`epoch_batches`:
each shape's clips, in the epoch's order, cut into batches, and the batches ordered by their
first clip), so no batch ever mixes shapes, whatever the shuffle. Rank r of a world of n takes
every n-th batch; data-loader workers split a rank's batches (`ClipBatchSampler`: the
DataLoader hands them out; `AlignedClipStream`: batch k goes to worker k mod workers). Both
resume from a batch of the rank's epoch. The other way, clips of any shape in one batch padded
to the largest with a mask, is `ClipSampler` (clip by clip) with `collate_padded`.

Under DistributedDataParallel every rank must take as many steps in an epoch, or the last
collective of the rank with more waits for the others until the process group's timeout (30
minutes by default). So by default (`even="pad"`) every rank gets as many batches: the epoch's
batches are extended by its own first ones to a multiple of the world size (as
DistributedSampler does with clips), so every clip is seen and at most world_size - 1 batches
are repeated. `even="drop"` leaves the last few out instead, `even=False` gives shares that
differ by one (one process, or a loop that copes with uneven steps). Rank and world size come
from torch.distributed; a sampler or stream made under a launcher (WORLD_SIZE, RANK or
LOCAL_RANK saying "one of several") before `init_process_group`, without `rank=` and

Discrete tokens with `joint_tokens=True` also come as one id sequence per clip in the
dataset's `JointVocabulary` (`clips.vocabulary`), made from what its manifest rows record
(the family's vocabulary of their kind, their codes' codebooks), not from today's defaults.

Packed training shards (`snakemake pack`: WebDataset tars of clips, README "Packed training
shards") stream through `PackedClips`: every rank its own tars, read in sequence.

Modules: `manifests` (rows and their files), `clips` (`AlignedClips`), `vocabulary`, `epochs`
(an epoch's order and a rank's share), `samplers` (the samplers and the stream), `collate`,
`packed` (`PackedClips`), `packed_sample` (a packed sample's files as a clip), `energon`
(the sample type Megatron-Energon makes of them).
"""

from avtokens.data.clips import AlignedClips
from avtokens.data.collate import collate_clips, collate_padded
from avtokens.data.epochs import epoch_batches, epoch_order, rank_share
from avtokens.data.manifests import VideoTokens, read_manifests
from avtokens.data.packed import PackedClips
from avtokens.data.samplers import AlignedClipStream, ClipBatchSampler, ClipSampler
from avtokens.data.vocabulary import JointVocabulary

__all__ = [
    "AlignedClipStream",
    "AlignedClips",
    "ClipBatchSampler",
    "ClipSampler",
    "JointVocabulary",
    "PackedClips",
    "VideoTokens",
    "collate_clips",
    "collate_padded",
    "epoch_batches",
    "epoch_order",
    "rank_share",
    "read_manifests",
]

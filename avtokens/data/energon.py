"""The Megatron-Energon sample type of a packed dataset (`avtokens.packing`): its
`.nv-meta/dataset.yaml` names `PackedClip`, and Energon's `get_train_dataset` and
`get_val_dataset` yield them. Imported by Energon, not by `avtokens.data`: the package does not
need megatron-energon otherwise."""

import torch
from megatron.energon import Sample
from megatron.energon.edataclass import edataclass


@edataclass
class PackedClip(Sample):
    """A clip of L latent frames with the audio codes of exactly those frames (the fields of
    `avtokens.data.packed_sample.decode_sample`)."""

    video: str
    preset: str
    start: int
    visual: torch.Tensor
    audio_codes: torch.Tensor
    audio_offsets: torch.Tensor
    frame_start: torch.Tensor
    time: torch.Tensor
    window_start: torch.Tensor
    record: dict

"""One id space for discrete visual tokens and audio codes, as autoregressive models take them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from avtokens.data.manifests import VideoTokens


@dataclass(frozen=True)
class JointVocabulary:
    """One token vocabulary for discrete visual indices and audio codes: `visual` distinct
    indices, then `codebooks` codebooks of `codebook_size` codes. A latent frame is
    `[FRAME, v_1 .. v_hw, AUDIO, a_1 .. a_qk]`: its visual indices row-major, then its k code
    frames, each as q codebook ids.

    It is the data's: `of(video)` makes it from what a manifest row records (its family's
    vocabulary for its kind, its codes' codebooks), and `AlignedClips.vocabulary` is its
    dataset's. For Cosmos DV tokens (64,000 FSQ indices) with DAC's codes (q = 9 codebooks
    of 1024) the ids are:

    - `[0, 64000)`: visual FSQ indices, as stored (another family's vocabulary moves the ids
      below by its size);
    - `64000 + 1024 * b + c`: code c of codebook b (b in 0..8; another codec's codebooks and
      their size change the ids below);
    - `FRAME = 73216`: a latent frame begins; `AUDIO = 73217`: its audio begins;
    - `size = 73218`.

    A latent frame of h x w visual tokens with k code frames is 2 + hw + qk ids.
    """

    visual: int
    codebooks: int
    codebook_size: int

    @classmethod
    def of(cls, video: VideoTokens) -> JointVocabulary:
        """The vocabulary of a manifest row's tokens; ValueError for continuous latents."""
        visual = video.layout.vocabulary
        if visual is None:
            raise ValueError(f"{video.where}: {video.family} {video.kind} tokens are continuous latents, "
                             "which have no vocabulary")  # fmt: skip
        return cls(visual, video.codebooks, video.codebook_size)

    @property
    def audio_offset(self) -> int:
        return self.visual

    @property
    def frame(self) -> int:
        return self.visual + self.codebooks * self.codebook_size

    @property
    def audio(self) -> int:
        return self.frame + 1

    @property
    def size(self) -> int:
        return self.frame + 2

    def frame_tokens(self, visual: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One latent frame: visual indices [h, w] and its codes [k, codebooks] -> ids [2 + hw + qk]."""
        offsets = self.audio_offset + self.codebook_size * torch.arange(self.codebooks)
        return torch.cat([
            torch.tensor([self.frame]), visual.reshape(-1).to(torch.int64), torch.tensor([self.audio]),
            (codes.to(torch.int64) + offsets).reshape(-1),
        ])  # fmt: skip

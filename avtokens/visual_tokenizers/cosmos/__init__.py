"""NVIDIA's Cosmos causal video tokenizers: TorchScript `encoder.jit` / `decoder.jit` per model,
continuous (CV, 16 channels) or discrete (DV, FSQ indices), in three releases with the same
files and I/O contract. This is the registry entry, which must not import torch (the Snakefile
reads the registry while it plans); the family's code is in its modules: `loader` (the
TorchScript graph, or our own `network` after a self-check), `fsq` (the DV quantiser) and
`stand_in` (the stand-in weights).
"""

from __future__ import annotations

from avtokens.visual_tokenizers.base import VisualTokenizer

ENGINES = ("auto", "torchscript", "eager", "compiled")
# Frames coded together: 121 is the temporal context of NVIDIA's Cosmos 1.0 tokenizers and
# reproduces the original description's token counts; NVIDIA's tool uses 17 (34% more tokens).
DEFAULT_WINDOW = 121
_FACTORS = ((4, 8), (8, 8), (8, 16))
# NVIDIA renamed the 0.1 repos from Cosmos-Tokenizer-* to Cosmos-0.1-Tokenizer-*.
_NEW_PREFIX, _OLD_PREFIX = "Cosmos-0.1-Tokenizer-", "Cosmos-Tokenizer-"


def _name(kind: str, temporal: int, spatial: int) -> str:
    return f"{kind}{temporal}x{spatial}x{spatial}"


class Cosmos(VisualTokenizer):
    name = "cosmos"
    label = "Cosmos"
    stand_in_output = ("a blocky copy of the video: each latent position's block of pixels in its colour, "
                       "averaged over the block (DV: in a few levels)")  # fmt: skip
    releases = {
        # The 2024 release: every kind and factor pair.
        "0.1": {(k, t, s): f"nvidia/{_NEW_PREFIX}{_name(k, t, s)}" for k in ("CV", "DV")
                for t, s in _FACTORS},
        # Cosmos 1.0 (January 2025): the two models its world models use.
        "1.0": {("CV", 8, 8): "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8",
                ("DV", 8, 16): "nvidia/Cosmos-1.0-Tokenizer-DV8x16x16"},
        # Cosmos-Predict1's tokenizers, named after the resolution they were trained at.
        "tokenize1": {("CV", 8, 8): "nvidia/Cosmos-Tokenize1-CV8x8x8-720p",
                      ("DV", 8, 16): "nvidia/Cosmos-Tokenize1-DV8x16x16-720p",
                      ("CV", 4, 8): "nvidia/Cosmos-Tokenize1-CV4x8x8-360p",
                      ("DV", 4, 8): "nvidia/Cosmos-Tokenize1-DV4x8x8-360p"},
    }  # fmt: skip
    default_release = "0.1"
    default_window = DEFAULT_WINDOW
    engines = ENGINES
    files = {"encoder": ("encoder.jit",), "decoder": ("decoder.jit",)}
    vocabulary = 64000  # FSQ levels 8, 8, 8, 5, 5, 5 (fsq.py)

    def folder_names(self, repo: str) -> list[str]:
        model = repo.rsplit("/", 1)[-1]
        for old, new in ((_OLD_PREFIX, _NEW_PREFIX), (_NEW_PREFIX, _OLD_PREFIX)):
            if model.startswith(old):
                return [model, new + model[len(old) :]]
        return [model]

    def open_encoder(self, folder, preset, device, digests):
        from avtokens.visual_tokenizers.cosmos.loader import CosmosEncoder

        return CosmosEncoder(folder / "encoder.jit", preset, device, digests["encoder.jit"])

    def open_decoder(self, folder, preset, device, digests):
        from avtokens.visual_tokenizers.cosmos.loader import CosmosDecoder

        return CosmosDecoder(folder / "decoder.jit", preset, device, digests["decoder.jit"])

    def write_stand_in(self, folder, kind, temporal, spatial, full_size=False):
        from avtokens.visual_tokenizers.cosmos.stand_in import write_cosmos_stand_in

        write_cosmos_stand_in(folder, kind == "DV", temporal, spatial, full_size=full_size)


COSMOS = Cosmos()

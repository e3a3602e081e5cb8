"""Kyutai's Mimi, the speech and audio codec of Moshi: Hugging Face transformers' `MimiModel`
from the repo kyutai/mimi (`config.json` and `model.safetensors`), loaded as its model card does
(`MimiModel.from_pretrained("kyutai/mimi")`). 24 kHz mono, 12.5 code frames a second (hop 1920),
up to 32 codebooks of 2048 entries: the first semantic, the rest acoustic residual ones. A
preset takes the first `codebooks` of them (default 8, as Moshi does).

Mimi is causal: convolutions padded on the left and a transformer whose attention reaches 250
code frames back. Encoding therefore streams: each window continues the state of the one
before (transformers' padding and sliding-window caches, both bounded), which gives the codes
of a whole-file encode exactly. The decoder has no such state in transformers, so each window
is decoded with one attention span (`sliding_window` code frames) of codes before it, and only
its own samples are kept; the difference from a whole-file decode is float rounding (measured
on the stand-in: 6e-7 of the peak; README, "Audio codecs").

The full-size stand-in (benchmarks) is `MimiModel(MimiConfig())` with random weights: transformers
documents `MimiConfig()` as the kyutai/mimi architecture (read in transformers 5.25's source:
hidden size 512, 8 layers of 8 heads, 64 filters, up-sampling [8, 6, 5, 4], 32 codebooks of 2048,
24 kHz, hop 1920, sliding window 250; 79.3 M parameters and 16.8 M codebook buffers, 385 MB in
float32). Checked offline only: not against the repo's `config.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from avtokens import AvTokensError
from avtokens.audio_codecs.base import AudioCodec, overlapping_windows
from avtokens.joblog import warn_stand_in
from avtokens.storage import as_declared

log = logging.getLogger(__name__)

CONFIG, WEIGHTS = "config.json", "model.safetensors"
# A stand-in's marker, beside its config: its codes and reconstructions carry no meaning.
STAND_IN_FILE = "avtokens_stand_in.json"
# The stand-in: the real model's rates, strides, codebooks and attention span at a tiny width,
# so that it codes a minute of audio in seconds on a CPU.
STAND_IN_CONFIG = dict(hidden_size=32, num_filters=4, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, head_dim=16, intermediate_size=64, codebook_dim=16,
                       vector_quantization_hidden_dimension=16, upsample_groups=32)  # fmt: skip


class Mimi(AudioCodec):
    name = "mimi"
    label = "Mimi"
    stand_in_output = "noise: a small Mimi with random weights, which codes no sound"
    sample_rate, hop = 24000, 1920
    codebook_size = 2048
    codebook_choices = range(1, 33)
    default_codebooks = 8  # Moshi's
    folder = "mimi"
    files = (CONFIG, WEIGHTS)
    repo = "kyutai/mimi"

    def open(self, folder, codebooks, device, digests):
        return MimiModel(self, folder, codebooks, device, digests)

    def write_stand_in(self, folder, seed=0, full_size=False):
        import torch
        from transformers import MimiConfig
        from transformers import MimiModel as Network
        from transformers.utils import logging as transformers_logging

        from avtokens.atomic import atomic_output

        torch.manual_seed(seed)
        config = MimiConfig() if full_size else MimiConfig(**STAND_IN_CONFIG)  # defaults: kyutai/mimi's
        network = Network(config).eval()
        _spread_codebooks(network, seed)
        folder = Path(folder)
        transformers_logging.disable_progress_bar()
        network.save_pretrained(folder)
        with atomic_output(folder / STAND_IN_FILE) as tmp:
            tmp.write_text(json.dumps({"stand_in": True, "codec": self.name, "seed": seed}) + "\n")


MIMI = Mimi()


def _spread_codebooks(network, seed: int) -> None:
    """Random codebook entries on the scale of what each quantizer receives: a fresh `MimiModel`
    has all-zero codebooks, which would code everything as entry 0."""
    import torch

    quantizers = [network.quantizer.semantic_residual_vector_quantizer,
                  network.quantizer.acoustic_residual_vector_quantizer]  # fmt: skip
    scales = []
    hooks = [q.input_proj.register_forward_hook(lambda _m, _i, out: scales.append(float(out.std())))
             for q in quantizers]  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        network.encode(0.1 * torch.randn(1, 1, network.config.sampling_rate, generator=generator),
                       num_quantizers=2)  # fmt: skip
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for quantizer, scale in zip(quantizers, scales, strict=True):
            for layer in quantizer.layers:
                book = layer.codebook
                book.embed_sum.copy_(scale * torch.randn(book.embed_sum.shape, generator=generator))
                book.cluster_usage.fill_(1.0)
                book._embed = None  # transformers caches embed_sum / cluster_usage on first use


class MimiModel:
    """A Mimi checkpoint folder loaded through transformers (`LoadedCodec`)."""

    def __init__(self, codec: Mimi, folder: Path, codebooks: int, device, digests: dict[str, str]):
        import torch
        from transformers import MimiModel as Network
        from transformers.utils import logging as transformers_logging

        from avtokens.checkpoints import from_pretrained

        transformers_logging.disable_progress_bar()
        network = from_pretrained(Network, folder, dtype=torch.float32)
        config, config_file = network.config, folder / CONFIG
        found = (config.sampling_rate, config.frame_size, config.codebook_size, config.audio_channels)
        expected = (codec.sample_rate, codec.hop, codec.codebook_size, 1)
        if found != expected:
            raise AvTokensError(f"{config_file}: a Mimi of {found[0]} Hz, hop {found[1]}, codebooks of "
                                f"{found[2]}, {found[3]} channel(s); the {codec.label} codec is "
                                f"{expected[0]} Hz, hop {expected[1]}, codebooks of {expected[2]}, "
                                f"mono")  # fmt: skip
        if codebooks > config.num_quantizers:
            raise AvTokensError(f"{folder}: this Mimi has {config.num_quantizers} codebooks, not {codebooks}")
        self.network = network.to(device).eval()
        self.device, self.hop = device, codec.hop
        self.codebooks, self.codebook_size = codebooks, codec.codebook_size
        self.decode_context = config.sliding_window  # one attention span of codes before each window
        self.stand_in = (folder / STAND_IN_FILE).is_file()
        if self.stand_in:
            warn_stand_in(log, folder, "codes")
        self.record = {"name": codec.name, "repo": codec.repo, "file": as_declared(folder / WEIGHTS),
                       "sha256": digests[WEIGHTS], "config_sha256": digests[CONFIG],
                       "stand_in": self.stand_in, "hop": self.hop, "codebooks": codebooks,
                       "codebook_size": self.codebook_size, "encode": "streaming (exact)",
                       "decode_context_frames": self.decode_context}  # fmt: skip

    def encode(self, read, frames, window):
        import torch

        encoder_cache = padding_cache = None
        for start in range(0, frames, window):
            end = min(start + window, frames)
            with torch.inference_mode():
                samples = read(start * self.hop, end * self.hop).view(1, 1, -1).to(self.device)
                out = self.network.encode(
                    samples, num_quantizers=self.codebooks, use_streaming=True,
                    encoder_cache=encoder_cache, padding_cache=padding_cache,
                )  # fmt: skip
            encoder_cache, padding_cache = out.encoder_cache, out.padding_cache
            yield out.audio_codes[0].T

    def decode(self, codes, window):
        import torch

        for start, end, c_start, _ in overlapping_windows(len(codes), window, self.decode_context, 0):
            with torch.inference_mode():
                chunk = codes[c_start:end].T.unsqueeze(0).to(self.device, torch.int64)
                audio = self.network.decode(chunk).audio_values.view(-1)
            yield audio[(start - c_start) * self.hop :]

"""The Descript Audio Codec, 44.1 kHz release (`weights_44khz_8kbps_0.0.1.pth`, a GitHub
release asset of descriptinc/descript-audio-codec): hop 512, 9 codebooks of 1024 entries.

DAC's encoder and decoder are convolutional, so a code frame depends only on audio within the
network's receptive field. Each window is therefore coded with that much real audio on both
sides, and only its own code frames (or samples) are kept: the result equals a whole-file
encode while memory stays bounded by the window.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

from avtokens import AvTokensError
from avtokens.atomic import write_saved
from avtokens.audio_codecs.base import AudioCodec, overlapping_windows
from avtokens.joblog import warn_stand_in
from avtokens.storage import as_declared

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights_44khz_8kbps_0.0.1.pth"
URL = "https://github.com/descriptinc/descript-audio-codec/releases/download/0.0.1/" + WEIGHTS_FILE
DAC_STAND_IN_KWARGS = dict(
    encoder_dim=8,
    encoder_rates=[2, 4, 8, 8],
    decoder_dim=32,
    decoder_rates=[8, 8, 4, 2],
    n_codebooks=9,
    codebook_size=1024,
    codebook_dim=8,
    sample_rate=44100,
)


class Dac44kHz(AudioCodec):
    name = "dac"
    label = "DAC 44.1 kHz"
    stand_in_output = "noise: a small DAC with random weights, which codes no sound"
    sample_rate, hop = 44100, 512
    codebook_size = 1024
    codebook_choices = range(9, 10)  # the released model codes with all nine
    default_codebooks = 9
    folder = "dac"
    files = (WEIGHTS_FILE,)
    url = URL

    def lock_key(self, file):
        return f"descript/descript-audio-codec/{file}"

    origin = "the release asset of github.com/descriptinc/descript-audio-codec"

    def open(self, folder, codebooks, device, digests):
        return DacModel(self, folder / WEIGHTS_FILE, device, digests[WEIGHTS_FILE])

    def write_stand_in(self, folder, seed=0, full_size=False):
        write_dac_stand_in(Path(folder) / WEIGHTS_FILE, seed, full_size)


DAC = Dac44kHz()


def write_dac_stand_in(path: Path | str, seed: int = 0, full_size: bool = False) -> None:
    """Write a small random `dac.DAC` (9 codebooks of 1024 entries, hop 512, 44.1 kHz) as the release
    file is saved (`{"state_dict", "metadata": {"kwargs"}}`), marked as a stand-in; with `full_size`,
    the released model's architecture, whose defaults `dac.DAC` carries."""
    import torch

    torch.manual_seed(seed)
    # dac scripts a layer with the deprecated torch.jit and builds its layers with the older weight_norm.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import dac

        model = dac.DAC() if full_size else dac.DAC(**DAC_STAND_IN_KWARGS)
    write_saved(path, lambda f: model.save(f, metadata={"avtokens_stand_in": True}, package=False))


class DacModel:
    """A DAC model loaded from a release-format weights file (`LoadedCodec`)."""

    def __init__(self, codec: Dac44kHz, path: Path, device, sha256: str):
        import torch

        with warnings.catch_warnings():  # dac scripts a layer with the deprecated torch.jit
            warnings.simplefilter("ignore", DeprecationWarning)
            import dac

        try:
            package = torch.load(str(path), map_location="cpu", weights_only=True)
            kwargs, state = package["metadata"]["kwargs"], package["state_dict"]
        except Exception as err:
            raise AvTokensError(f"{path}: not a DAC weights file ({err})") from None
        with warnings.catch_warnings():  # DAC builds its layers with the older weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            model = dac.DAC(**kwargs)
        # DAC.load is not strict; a missing or unexpected weight must not pass silently.
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise AvTokensError(
                f"{path}: weights do not fit the DAC model: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )
        found = (model.sample_rate, model.hop_length, model.n_codebooks, model.codebook_size)
        expected = (codec.sample_rate, codec.hop, codec.default_codebooks, codec.codebook_size)
        if found != expected:
            raise AvTokensError(f"{path}: a DAC of {found[0]} Hz, hop {found[1]}, {found[2]} codebooks "
                                f"of {found[3]}; the {codec.label} codec is {expected[0]} Hz, hop "
                                f"{expected[1]}, {expected[2]} codebooks of {expected[3]}")  # fmt: skip
        self.model = model.to(device).eval()
        self.device = device
        self.hop, self.codebooks, self.codebook_size = codec.hop, codec.default_codebooks, codec.codebook_size
        self.stand_in = bool(package["metadata"].get("avtokens_stand_in", False))
        self.encode_context = math.ceil(_receptive_field(model.encoder, upsampling=False) / self.hop) + 1
        self.decode_context = math.ceil(_receptive_field(model.decoder, upsampling=True)) + 1
        self.record = {"name": codec.name, "file": as_declared(path), "sha256": sha256,
                       "stand_in": self.stand_in, "hop": self.hop, "codebooks": self.codebooks,
                       "codebook_size": self.codebook_size}  # fmt: skip
        if self.stand_in:
            warn_stand_in(log, path, "codes")

    def encode(self, read, frames, window):
        import torch

        context = self.encode_context
        for start, end, c_start, c_end in overlapping_windows(frames, window, context, context):
            with torch.inference_mode():
                samples = read(c_start * self.hop, c_end * self.hop).view(1, 1, -1).to(self.device)
                codes = self.model.encode(samples)[1][0].T
            yield codes[start - c_start : end - c_start]

    def decode(self, codes, window):
        import torch

        context = self.decode_context
        for start, end, c_start, c_end in overlapping_windows(len(codes), window, context, context):
            with torch.inference_mode():
                chunk = codes[c_start:c_end].T.unsqueeze(0).to(self.device, torch.int64)
                audio = self.model.decode(self.model.quantizer.from_codes(chunk)[0]).view(-1)
            yield audio[(start - c_start) * self.hop : (end - c_start) * self.hop]


def _receptive_field(network, upsampling: bool) -> float:
    """How far one output position sees: in input samples for a downsampling stack, in
    input (code) frames for an upsampling one. Assumes the modules run in definition
    order, which holds for DAC's encoder and decoder."""
    from torch import nn

    field, scale = 1.0, 1.0  # scale: size of one position at this depth, in input units
    for m in network.modules():
        if isinstance(m, nn.ConvTranspose1d):
            field += (m.kernel_size[0] - 1) / m.stride[0] * scale
            scale /= m.stride[0]
        elif isinstance(m, nn.Conv1d):
            field += (m.kernel_size[0] - 1) * m.dilation[0] * scale
            if not upsampling:
                scale *= m.stride[0]
    return field

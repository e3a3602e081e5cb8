"""Audio tokens: a video's audio <-> DAC codes, once per video, in overlapping windows
(`avtokens.audio_tokens` groups them by each preset's latent frames without running DAC).

DAC's encoder and decoder are convolutional, so a code frame depends only on audio
within the network's receptive field. Each window is therefore coded with that much
real audio on both sides (`context`), and only its own code frames (or samples) are
kept: the result equals a whole-file encode while memory stays bounded by the window.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import nn

import avtokens
from avtokens import AvTokensError
from avtokens.alignment import code_frame_count
from avtokens.atomic import atomic_output
from avtokens.audio_tokens import CODES_FORMAT
from avtokens.checkpoints import DAC_LOCK_KEY, WeightsLock
from avtokens.devices import resolve_device, runtime_record
from avtokens.media import sha256_of
from avtokens.planning import DAC_SAMPLE_RATE
from avtokens.progress import Progress
from avtokens.shards import Item, Stage, run_items
from avtokens.tokenfile import TokenFileWriter, load_tokens

log = logging.getLogger(__name__)
SAMPLE_RATE = DAC_SAMPLE_RATE


class DacCodec:
    """A DAC model loaded from a release-format weights file, and what metadata records of it."""

    def __init__(self, path: Path | str, device: torch.device, lock: WeightsLock | None = None):
        with warnings.catch_warnings():  # dac scripts a layer with the deprecated torch.jit
            warnings.simplefilter("ignore", DeprecationWarning)
            import dac

        path = Path(path)
        if not path.is_file():
            raise AvTokensError(
                f"DAC weights {path} are missing (weights_44khz_8kbps_0.0.1.pth, the release asset "
                f"of github.com/descriptinc/descript-audio-codec)"
            )
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
        if model.sample_rate != SAMPLE_RATE:
            raise AvTokensError(f"{path}: a {model.sample_rate} Hz DAC; this workflow uses {SAMPLE_RATE} Hz")
        self.model = model.to(device).eval()
        self.device = device
        self.hop = int(model.hop_length)
        self.codebooks = int(model.n_codebooks)
        self.codebook_size = int(model.codebook_size)
        self.stand_in = bool(package["metadata"].get("avtokens_stand_in", False))
        self.encode_context = math.ceil(_receptive_field(model.encoder, upsampling=False) / self.hop) + 1
        self.decode_context = math.ceil(_receptive_field(model.decoder, upsampling=True)) + 1
        sha256 = sha256_of(path)
        if lock is not None:
            lock.check(DAC_LOCK_KEY, path, sha256)
        self.record = {"file": str(path), "sha256": sha256, "stand_in": self.stand_in,
                       "hop": self.hop, "codebooks": self.codebooks,
                       "codebook_size": self.codebook_size}  # fmt: skip
        if self.stand_in:
            log.warning("%s holds stand-in weights: its codes carry no meaning", path)

    @torch.inference_mode()
    def encode(self, samples: torch.Tensor) -> torch.Tensor:
        """mono float [n * hop] -> codes int64 [n, codebooks]."""
        codes = self.model.encode(samples.view(1, 1, -1).to(self.device))[1]
        return codes[0].T

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [n, codebooks] -> mono float [n * hop]."""
        z = self.model.quantizer.from_codes(codes.T.unsqueeze(0).to(self.device, torch.int64))[0]
        return self.model.decode(z).view(-1)


def _receptive_field(network: nn.Module, upsampling: bool) -> float:
    """How far one output position sees: in input samples for a downsampling stack, in
    input (code) frames for an upsampling one. Assumes the modules run in definition
    order, which holds for DAC's encoder and decoder."""
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


def _windows(total: int, size: int, context: int):
    """(start, end, context_start, context_end) of each window over [0, total)."""
    for start in range(0, total, size):
        end = min(start + size, total)
        yield start, end, max(0, start - context), min(total, end + context)


def _read_samples(wav: soundfile.SoundFile, start: int, end: int) -> torch.Tensor:
    """Samples [start, end) of a mono file, zeros past its end."""
    wav.seek(min(start, wav.frames))
    data = wav.read(end - start, dtype="float32", always_2d=True)[:, 0]
    if len(data) < end - start:
        data = np.pad(data, (0, end - start - len(data)))
    return torch.from_numpy(data)


def encode_wav_files(items, weights, device: str, window_seconds: float, weights_lock=None) -> None:
    """Code videos' audio with DAC, (wav, timeline, dest) each (`AudioEncode`)."""
    videos = [Item("", {"wav": str(w), "timeline": str(t)}, {"codes": str(d)}) for w, t, d in items]
    run_items(AudioEncode(weights, device, window_seconds, weights_lock), videos)


class AudioEncode(Stage):
    """The audio_encode rule: each video's wav and timeline -> its DAC codes, the model loaded
    once. `weights_lock`: the lock file official weights are checked against (None for
    stand-ins)."""

    def __init__(self, weights, device: str, window_seconds: float, weights_lock=None):
        self.weights, self.device, self.window_seconds = weights, device, window_seconds
        self.weights_lock = weights_lock

    def open(self) -> None:
        self.codec = DacCodec(
            self.weights, resolve_device(self.device), WeightsLock.optional(self.weights_lock)
        )

    def run(self, item: Item, prepared) -> None:
        timeline = json.loads(Path(item.inputs["timeline"]).read_text(encoding="utf-8"))
        _encode(self.codec, Path(item.inputs["wav"]), timeline, item.outputs["codes"], self.window_seconds)


def _encode(codec: DacCodec, wav_path: Path, timeline: dict, dest, window_seconds: float) -> None:
    """The code frames that cover the video's frames (the last one reaching past its end),
    coded from the audio on the video's clock; silence where the audio is shorter."""
    video = timeline["video"]
    total = code_frame_count(video["frame_count"], Fraction(video["fps"]), SAMPLE_RATE, codec.hop)
    window = max(1, int(window_seconds * SAMPLE_RATE / codec.hop))
    with soundfile.SoundFile(str(wav_path)) as wav, atomic_output(dest) as tmp:
        if wav.samplerate != SAMPLE_RATE or wav.channels != 1:
            raise AvTokensError(
                f"{wav_path}: expected mono {SAMPLE_RATE} Hz, "
                f"found {wav.channels} channels at {wav.samplerate} Hz"
            )
        writer = TokenFileWriter(tmp, "codes", torch.uint16, (codec.codebooks,))
        progress = Progress(f"{wav_path.name}: audio encode", total * codec.hop / SAMPLE_RATE, "s")
        for start, end, c_start, c_end in _windows(total, window, codec.encode_context):
            codes = codec.encode(_read_samples(wav, c_start * codec.hop, c_end * codec.hop))
            writer.append(codes[start - c_start : end - c_start].to(torch.uint16).cpu())
            progress.advance((end - start) * codec.hop / SAMPLE_RATE)
        metadata = {
            "format": CODES_FORMAT,
            "project_version": avtokens.__version__,
            "source": timeline["source"],
            "video": video,
            "audio": {
                "has_audio": video["has_audio"],
                "source_rate": video["audio_rate"],
                "source_channels": video["audio_channels"],
                "channel_policy": "downmixed to mono by ffmpeg before coding",
                "wav_samples": wav.frames,
                "sample_rate": SAMPLE_RATE,
                "hop": codec.hop,
                "code_rate": f"{SAMPLE_RATE}/{codec.hop}",
                "codebooks": codec.codebooks,
                "codebook_size": codec.codebook_size,
                "code_frames": total,
            },
            "codec": codec.record,
            "stand_in_weights": codec.stand_in,
            "runtime": runtime_record(codec.device),
        }
        writer.finish(metadata)
    log.info("%s: %d code frames for %d video frames", wav_path, total, video["frame_count"])


def decode_codes_files(items, weights, device: str, window_seconds: float, weights_lock=None) -> None:
    """Decode DAC code files, (codes, dest) each (`AudioDecode`)."""
    videos = [Item("", {"codes": str(codes)}, {"wav": str(dest)}) for codes, dest in items]
    run_items(AudioDecode(weights, device, window_seconds, weights_lock), videos)


class AudioDecode(AudioEncode):
    """The audio_decode rule: each video's DAC codes (`AudioEncode`) -> a mono 44.1 kHz wav as
    long as its video, the model loaded once."""

    def run(self, item: Item, prepared) -> None:
        _decode(self.codec, Path(item.inputs["codes"]), item.outputs["wav"], self.window_seconds)


def _decode(codec: DacCodec, codes_path: Path, dest, window_seconds: float) -> None:
    tokens = load_tokens(codes_path)
    codes = tokens["codes"][0].to(torch.int64)
    video = tokens.metadata["video"]
    duration_samples = round(video["frame_count"] * SAMPLE_RATE / Fraction(video["fps"]))
    window = max(1, int(window_seconds * SAMPLE_RATE / codec.hop))
    with (
        atomic_output(dest) as tmp,
        soundfile.SoundFile(
            str(tmp), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16", format="WAV"
        ) as out,
    ):
        written = 0
        progress = Progress(f"{codes_path.name}: audio decode", duration_samples / SAMPLE_RATE, "s")
        for start, end, c_start, c_end in _windows(len(codes), window, codec.decode_context):
            audio = codec.decode(codes[c_start:c_end])
            piece = audio[(start - c_start) * codec.hop : (end - c_start) * codec.hop]
            piece = piece[: duration_samples - written].clamp(-1, 1).cpu().numpy()
            out.write(piece)
            written += len(piece)
            progress.advance(len(piece) / SAMPLE_RATE)
    log.info("%s: %d code frames -> %d samples", codes_path, len(codes), written)

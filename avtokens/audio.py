"""Audio tokens: a video's audio <-> codes of the preset's codec (`avtokens.audio_codecs`), once
per video and codec, window by window in bounded memory (how a window is coded is the codec's
business). `avtokens.audio_tokens` then groups the codes by each preset's latent frames without
running a model.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
import torch

import avtokens
from avtokens import AvTokensError
from avtokens.alignment import code_frame_count
from avtokens.atomic import atomic_output
from avtokens.audio_codecs import AudioCodec, LoadedCodec, audio_codec
from avtokens.audio_tokens import CODES_FORMAT
from avtokens.checkpoints import WeightsLock
from avtokens.devices import resolve_device, runtime_record
from avtokens.progress import Progress
from avtokens.shards import Item, Stage, run_items
from avtokens.tokenfile import TokenFileWriter, load_tokens

log = logging.getLogger(__name__)


def _read_samples(wav: soundfile.SoundFile, start: int, end: int) -> torch.Tensor:
    """Samples [start, end) of a mono file, zeros past its end."""
    wav.seek(min(start, wav.frames))
    data = wav.read(end - start, dtype="float32", always_2d=True)[:, 0]
    if len(data) < end - start:
        data = np.pad(data, (0, end - start - len(data)))
    return torch.from_numpy(data)


def encode_wav_files(items, codec: str, codebooks: int, folder, device: str, window_seconds: float,
                     weights_lock=None) -> None:  # fmt: skip
    """Code videos' audio, (wav, timeline, dest) each (`AudioEncode`)."""
    videos = [Item("", {"wav": str(w), "timeline": str(t)}, {"codes": str(d)}) for w, t, d in items]
    run_items(AudioEncode(codec, codebooks, folder, device, window_seconds, weights_lock), videos)


class AudioEncode(Stage):
    """The audio_encode rule: each video's wav and timeline -> its codes, with `codebooks` of the
    codec called `codec` from the checkpoint `folder`, the model loaded once. `weights_lock`: the
    lock file official weights are checked against (None for stand-ins)."""

    def __init__(self, codec: str, codebooks: int, folder, device: str, window_seconds: float,
                 weights_lock=None):  # fmt: skip
        self.codec, self.codebooks, self.folder = audio_codec(codec), int(codebooks), Path(folder)
        self.device, self.window_seconds, self.weights_lock = device, window_seconds, weights_lock

    def open(self) -> None:
        lock = WeightsLock.optional(self.weights_lock)
        self.model = self.codec.load(self.folder, self.codebooks, resolve_device(self.device), lock)

    def run(self, item: Item, prepared) -> None:
        timeline = json.loads(Path(item.inputs["timeline"]).read_text(encoding="utf-8"))
        _encode(self.codec, self.model, Path(item.inputs["wav"]), timeline, item.outputs["codes"],
                self.window_seconds)  # fmt: skip


def _encode(codec: AudioCodec, model: LoadedCodec, wav_path: Path, timeline: dict, dest,
            window_seconds: float) -> None:  # fmt: skip
    """The code frames that cover the video's frames (the last one reaching past its end),
    coded from the audio on the video's clock; silence where the audio is shorter."""
    video = timeline["video"]
    rate, hop = codec.sample_rate, codec.hop
    total = code_frame_count(video["frame_count"], Fraction(video["fps"]), rate, hop)
    with soundfile.SoundFile(str(wav_path)) as wav, atomic_output(dest) as tmp:
        if wav.samplerate != rate or wav.channels != 1:
            raise AvTokensError(f"{wav_path}: {codec.label} codes mono {rate} Hz audio; found "
                                f"{wav.channels} channels at {wav.samplerate} Hz")  # fmt: skip
        writer = TokenFileWriter(tmp, "codes", torch.uint16, (model.codebooks,))
        progress = Progress(f"{wav_path.name}: audio encode", float(total / codec.code_rate), "s")
        coded = 0
        for codes in model.encode(lambda start, end: _read_samples(wav, start, end), total,
                                  codec.window_frames(window_seconds)):  # fmt: skip
            writer.append(codes.to(torch.uint16).cpu())
            coded += len(codes)
            progress.advance(float(len(codes) / codec.code_rate))
        if coded != total:
            raise AvTokensError(f"{codec.label} gave {coded} code frames for {wav_path}, not {total}")
        metadata = {
            "format": CODES_FORMAT,
            "project_version": avtokens.__version__,
            "source": timeline["source"],
            "video": video,
            "audio": {
                "has_audio": video["has_audio"],
                "source_rate": video["audio_rate"],
                "source_channels": video["audio_channels"],
                "channel_policy": codec.channel_policy,
                "wav_samples": wav.frames,
                "codec": codec.name,
                "sample_rate": rate,
                "hop": hop,
                "code_rate": f"{rate}/{hop}",
                "codebooks": model.codebooks,
                "codebook_size": model.codebook_size,
                "code_frames": total,
                # How the source's audio was placed on the video's clock (timelines of older
                # versions have no record of it).
                "placement": timeline.get("audio_placement"),
            },
            "codec": model.record,
            "stand_in_weights": model.stand_in,
            "runtime": runtime_record(model.device),
        }
        writer.finish(metadata)
    log.info("%s: %d code frames for %d video frames", wav_path, total, video["frame_count"])


def decode_codes_files(items, codec: str, codebooks: int, folder, device: str, window_seconds: float,
                       weights_lock=None) -> None:  # fmt: skip
    """Decode code files, (codes, dest) each (`AudioDecode`)."""
    videos = [Item("", {"codes": str(codes)}, {"wav": str(dest)}) for codes, dest in items]
    run_items(AudioDecode(codec, codebooks, folder, device, window_seconds, weights_lock), videos)


class AudioDecode(AudioEncode):
    """The audio_decode rule: each video's codes (`AudioEncode`) -> a mono wav at the codec's
    rate, as long as its video, the model loaded once."""

    def run(self, item: Item, prepared) -> None:
        _decode(self.codec, self.model, Path(item.inputs["codes"]), item.outputs["wav"], self.window_seconds)


def _decode(codec: AudioCodec, model: LoadedCodec, codes_path: Path, dest, window_seconds: float) -> None:
    tokens = load_tokens(codes_path)
    audio = tokens.metadata["audio"]
    made_by = (audio["codec"], audio["codebooks"])
    if made_by != (codec.name, model.codebooks):
        raise AvTokensError(f"{codes_path}: codes of {made_by[0]} with {made_by[1]} codebooks; this job "
                            f"decodes {codec.name} with {model.codebooks}")  # fmt: skip
    codes = tokens["codes"][0].to(torch.int64)
    video = tokens.metadata["video"]
    rate = codec.sample_rate
    duration_samples = round(video["frame_count"] * rate / Fraction(video["fps"]))
    with (
        atomic_output(dest) as tmp,
        soundfile.SoundFile(
            str(tmp), "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV"
        ) as out,
    ):
        written = 0
        progress = Progress(f"{codes_path.name}: audio decode", duration_samples / rate, "s")
        for audio_piece in model.decode(codes, codec.window_frames(window_seconds)):
            piece = audio_piece[: duration_samples - written].clamp(-1, 1).cpu().numpy()
            out.write(piece)
            written += len(piece)
            progress.advance(len(piece) / rate)
    log.info("%s: %d code frames -> %d samples", codes_path, len(codes), written)

"""Video file <-> visual token file of a preset's tokenizer family, streamed window by window.

Frames come from an ffmpeg pipe `window` at a time, are padded (time: repeat the last
frame up to 1 + k*tc; space: repeat the edge up to a multiple of the spatial factor),
batched several windows per model call, and written to the token file as they come.
Decoding reverses this and crops the padding away, so memory does not grow with length.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import avtokens
from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.background import InOrderWorker, prefetched
from avtokens.checkpoints import WeightsLock
from avtokens.devices import resolve_device, runtime_record
from avtokens.media import (
    DecodedVideo,
    VideoWriter,
    probe,
    ratio_text,
    read_frame_windows,
    sha256_of,
    source_record,
    video_record,
)
from avtokens.metrics import psnr, ssim
from avtokens.picture import Picture, plan_picture
from avtokens.presets import Preset
from avtokens.progress import Progress
from avtokens.shaping import Shaping
from avtokens.shards import Item, Stage, run_items
from avtokens.tokenfile import TokenFileWriter, read_metadata
from avtokens.visual_tokenizers import LEGACY_FAMILY, VisualTokenizer
from avtokens.windows import Window, latent_frame_spans, padded_length, plan_windows, round_up

log = logging.getLogger(__name__)


def host_frames(windows: Iterator[np.ndarray], device: torch.device) -> Iterator:
    """Frame windows ready for a copy to `device`: for a GPU, copied into pinned (page-locked)
    memory on a background thread, so that the copy to the GPU runs without the host waiting."""
    if device.type != "cuda":
        return windows
    return prefetched(windows, lambda frames: torch.from_numpy(frames).pin_memory())


# Frames are converted between uint8 and the model's floats this many pixels at a time, so the
# conversion never needs a second copy of a whole window (a 4K window of 17 frames is 1.7 GB in
# float32).
CONVERT_PIXELS = 8_000_000


def frames_per_step(height: int, width: int) -> int:
    """How many frames of `height` x `width` one conversion step takes (at least one)."""
    return max(1, CONVERT_PIXELS // (height * width))


def model_input(batch: list[tuple[Window, np.ndarray | torch.Tensor]], height: int, width: int,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """Windows of uint8 frames [n, h, w, 3] -> one tensor [B, 3, T, height, width] of `dtype` in
    [-1, 1], each window padded by repetition (its last frame up to T, its last row and column
    up to `height` and `width`). Filled in place a few frames at a time: the batch's floats
    are the only full-size copy."""
    x = torch.empty((len(batch), 3, batch[0][0].padded_frames, height, width), dtype=dtype, device=device)
    for out, (_, frames) in zip(x, batch, strict=True):
        frames = torch.as_tensor(frames)
        n, h, w = frames.shape[:3]
        step = frames_per_step(h, w)
        for k in range(0, n, step):
            chunk = frames[k : min(k + step, n)].to(device, non_blocking=True).permute(3, 0, 1, 2)
            out[:, k : k + chunk.shape[1], :h, :w] = chunk.float().div_(127.5).sub_(1)
        out[:, :n, :h, w:] = out[:, :n, :h, w - 1 : w]
        out[:, :n, h:] = out[:, :n, h - 1 : h]
        out[:, n:] = out[:, n - 1 : n]
    return x


def model_output_to_frames(
    frames: torch.Tensor, real_frames: int, height: int, width: int
) -> Iterator[torch.Tensor]:
    """[3, T, H', W'] in [-1, 1] -> uint8 frames [n, height, width, 3] on its device, the
    first `real_frames` of them, a few at a time (no float copy of the whole window)."""
    step = frames_per_step(height, width)
    for k in range(0, real_frames, step):
        chunk = frames[:, k : min(k + step, real_frames), :height, :width]
        chunk = chunk.float().add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        yield chunk.permute(1, 2, 3, 0).contiguous()


def windows_per_call(budget_megapixels: float, frames: int, height: int, width: int) -> int:
    """How many windows of `frames` frames at `height` x `width` one model call takes: as many
    as the budget of frames x pixels holds, and at least one. Memory grows with that product,
    so one budget serves 17-frame windows (several per call) and 121-frame ones at 1080p (one)."""
    return max(1, int(budget_megapixels * 1e6 // (frames * height * width)))


def _batches(items, frames_of, budget_megapixels: float, height: int, width: int):
    """Consecutive runs of items with equal `frames_of(item)` (equal tensor shapes), as many
    per run as `windows_per_call` allows."""
    batch = []
    for item in items:
        if batch and (
            frames_of(batch[0]) != frames_of(item)
            or len(batch) == windows_per_call(budget_megapixels, frames_of(item), height, width)
        ):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


@contextlib.contextmanager
def _explain_oom(device: torch.device, tokenizer: VisualTokenizer, part: str, windows: int, frames: int,
                 height: int, width: int, budget_megapixels: float):  # fmt: skip
    """Turn the device running out of memory in a model call into one line naming the setting
    to lower: the window when a single window does not fit, else the batch budget."""
    try:
        yield
    except torch.OutOfMemoryError:
        if windows == 1:
            raise AvTokensError(
                f"{device}: one window of {frames} frames at {width}x{height} does not fit in memory for the "
                f"{tokenizer.label} {part}; {tokenizer.single_window_advice(frames)}"
            ) from None
        raise AvTokensError(
            f"{device}: {windows} windows of {frames} frames at {width}x{height} "
            f"({windows * frames * width * height / 1e6:.0f} megapixel-frames) do not fit in memory for the "
            f"{tokenizer.label} {part}; lower `batch_megapixels` (now {budget_megapixels:g})"
        ) from None


def encode_video_file(source, dest, preset: Preset, checkpoint, device: str, batch_megapixels: float,
                      name: str, weights_lock=None, picture=None) -> None:  # fmt: skip
    """Tokenize one video with one preset into a visual token file. `checkpoint`: the folder
    of the preset's model. `weights_lock`: the lock file official weights are checked against
    (None for stand-ins). `picture`: the settings of `avtokens.picture.plan_picture` (pixels,
    deinterlace); default theirs."""
    stage = VisualEncode(preset, checkpoint, device, batch_megapixels, weights_lock, picture)
    run_items(stage, [Item(name, {"source": str(source)}, {"tokens": str(dest)})])


class FrameStream:
    """A video's frames as the tokenizer sees them, being read by ffmpeg on a background
    thread, the first window already decoded: a shard's next video is ready when the model
    is done with the current one."""

    def __init__(self, source, picture: Picture, window: int, budget_megapixels: float):
        self.decoded = {}  # filled and dropped frames, once all are read (read_frame_windows)
        # Read ahead as far as the budget of frames x pixels goes, and at least one window.
        ahead = 1 + (2 * window * picture.width * picture.height <= budget_megapixels * 1e6)
        self._reader = read_frame_windows(source, picture, window, prefetch=ahead, decoded=self.decoded)
        first = next(self._reader, None)
        self.windows = itertools.chain([] if first is None else [first], self._reader)

    def close(self) -> None:
        """Stop reading now (ffmpeg and the reading thread), not whenever the garbage is
        collected: that may be at interpreter exit, after an interrupt, when the thread can
        no longer be joined."""
        self._reader.close()


class SourceFrames:
    """A source video opened for the encoder: probed, its picture planned, its hash being
    taken and its frames being read."""

    def __init__(self, source: Path, picture_settings: dict, window: int, budget_megapixels: float,
                 shaping: Shaping | None = None):  # fmt: skip
        self.info = probe(source)
        self.info.warn_size_changes(source)
        self.picture = plan_picture(self.info, **picture_settings, shaping=shaping)
        timeline = self.picture.timeline
        if timeline and timeline.start_seconds >= self.info.duration:
            raise AvTokensError(
                f"{source}: its part starts at {float(timeline.start_seconds):.3f} s (the preset's start), "
                f"past the end of its {self.info.duration:.3f} s of video"
            )
        hashing = ThreadPoolExecutor(1)
        self.sha256 = hashing.submit(sha256_of, source)
        hashing.shutdown(wait=False)
        self.frames = FrameStream(source, self.picture, window, budget_megapixels)


class VisualEncode(Stage):
    """The visual_encode rule: each video's source -> its visual token file, the encoder
    loaded once for all of them (for many short videos, loading a 100 M-parameter model per
    video would dominate)."""

    def __init__(self, preset: Preset, checkpoint, device: str, batch_megapixels: float, weights_lock=None,
                 picture=None):  # fmt: skip
        self.preset, self.checkpoint = preset, Path(checkpoint)
        self.device, self.batch_megapixels = device, batch_megapixels
        self.weights_lock, self.picture = weights_lock, picture or {}

    def open(self) -> None:
        dev, tokenizer = resolve_device(self.device), self.preset.tokenizer
        self.encoder = tokenizer.encoder(
            self.checkpoint, self.preset, dev, WeightsLock.optional(self.weights_lock)
        )
        decoder_weights = tokenizer.weights_file("decoder")
        if decoder_weights == tokenizer.weights_file("encoder"):  # one file (a VAE): hashed once
            self.decoder_sha256 = self.encoder.record["sha256"]
        else:
            self.decoder_sha256 = sha256_of(self.checkpoint / decoder_weights)

    def prepare(self, item: Item) -> SourceFrames:
        source = Path(item.inputs["source"])
        return SourceFrames(
            source, self.picture, self.preset.window, self.batch_megapixels, self.preset.shaping
        )

    def run(self, item: Item, prepared: SourceFrames) -> None:
        try:
            _encode(self.encoder, Path(item.inputs["source"]), item.outputs["tokens"], item.name,
                    self.decoder_sha256, self.batch_megapixels, prepared)  # fmt: skip
        finally:
            prepared.frames.close()


def _encode(encoder, source: Path, dest, name: str, decoder_sha256: str,
            batch_megapixels: float, opened: SourceFrames) -> None:  # fmt: skip
    preset, dev = encoder.preset, encoder.device
    info, picture = opened.info, opened.picture
    tc, s = preset.temporal, preset.spatial
    height, width = round_up(picture.height, s), round_up(picture.width, s)
    discrete, layout = preset.is_discrete, preset.tokenizer.layout(preset.kind)
    tensor_name, dtype = layout.tensor, getattr(torch, layout.dtype)
    frame_shape = (height // s, width // s) + (() if discrete else (encoder.channels,))
    windows: list[Window] = []
    expected = info.packet_count if picture.timeline is None else picture.timeline.frames_in(info.duration)
    progress = Progress(f"{source.name}: visual encode", expected, "frames")

    def windows_read():
        for frames in host_frames(opened.frames.windows, dev):
            start = windows[-1].start + windows[-1].real_frames if windows else 0
            win = Window(start, len(frames), padded_length(len(frames), tc))
            windows.append(win)
            yield win, frames

    with atomic_output(dest) as tmp:
        writer = TokenFileWriter(tmp, tensor_name, dtype, frame_shape)
        # Tokens are copied off the device and written on a background thread while
        # the next batch runs.
        with InOrderWorker(lambda tokens: [writer.append(t) for t in tokens]) as saver:
            batches = _batches(windows_read(), lambda b: b[0].padded_frames, batch_megapixels, height, width)
            # What a call of full windows takes at this size: a compiling engine pads every call
            # to it, so a video's shapes, and so its tokens, owe nothing to the videos before it.
            full_batch = windows_per_call(batch_megapixels, preset.window, height, width)
            for batch in batches:
                win = batch[0][0]
                with _explain_oom(dev, preset.tokenizer, "encoder", len(batch), win.padded_frames, height,
                                  width, batch_megapixels):  # fmt: skip
                    x = model_input(batch, height, width, dev, encoder.dtype)
                    tokens = encoder(x, full_batch)
                expected = win.latent_frames(tc)
                if tokens.shape[1] != expected or tuple(tokens.shape[2:4]) != frame_shape[:2]:
                    raise AvTokensError(
                        f"{encoder.record['file']}: gave tokens {tuple(tokens.shape)} for "
                        f"{len(batch)} windows of {tuple(x.shape[1:])}; a {preset.kind}{preset.factors} "
                        f"{preset.tokenizer.label} encoder gives {expected} x {frame_shape[:2]}"
                    )
                del x  # before the next batch is made: one batch's input alive at a time
                saver.put(tokens.to(dtype))
                progress.advance(sum(w.real_frames for w, _ in batch))
        if not windows:
            raise AvTokensError(f"{source}: no decodable video frames")
        decoded = DecodedVideo(sum(w.real_frames for w in windows), **opened.frames.decoded)
        decoded.warn(source)
        frame_count = decoded.frame_count
        spans = latent_frame_spans(windows, tc)
        metadata = {
            "format": "avtokens-visual/1",
            "project_version": avtokens.__version__,
            "source": source_record(source, name, opened.sha256.result()),
            "video": {**video_record(info, decoded), **timeline_record(picture, frame_count, info),
                      "padded_width": width, "padded_height": height},
            "picture": picture.as_metadata(),
            "windows": {"frames": preset.window, "count": len(windows),
                        "last_real_frames": windows[-1].real_frames,
                        "last_padded_frames": windows[-1].padded_frames},
            "latent": {"frames": len(spans), "height": frame_shape[0], "width": frame_shape[1],
                       "channels": None if discrete else encoder.channels,
                       "tensor": tensor_name},
            "tokenizer": {"family": preset.family, "release": preset.release, "kind": preset.kind,
                          "temporal": tc, "spatial": s, "window": preset.window, "repo": preset.repo,
                          "weights": preset.weights, "encoder": encoder.record,
                          "decoder_sha256": decoder_sha256, **encoder.metadata},
            "stand_in_weights": encoder.stand_in,
            "runtime": runtime_record(dev),
        }  # fmt: skip
        writer.finish(metadata, extra={"frame_spans": torch.tensor(spans, dtype=torch.int64)})
    log.info("%s: %d frames -> %d latent frames of %s %s", source, frame_count, len(spans),
             frame_shape, tensor_name)  # fmt: skip


def timeline_record(picture: Picture, frame_count: int, info) -> dict:
    """What a token file's video record says differently where a preset has a timeline of its
    own: the rate and duration of its frames, and the source's own rate beside them."""
    if picture.timeline is None:
        return {}
    rate = picture.timeline.rate
    return {"fps": ratio_text(rate, "/"), "duration": float(frame_count / rate),
            "source_fps": ratio_text(info.fps, "/")}  # fmt: skip


def decode_token_file(tokens_path, dest, preset: Preset, checkpoint, device: str, batch_megapixels: float,
                      crf: int, x264_preset: str, source, frame_metrics,
                      weights_lock=None) -> None:  # fmt: skip
    """Reconstruct one visual token file (`VisualDecode`)."""
    stage = VisualDecode(preset, checkpoint, device, batch_megapixels, crf, x264_preset, weights_lock)
    item = Item("", {"tokens": str(tokens_path), "source": str(source)},
                {"video": str(dest), "frame_metrics": str(frame_metrics)})  # fmt: skip
    run_items(stage, [item])


class VisualDecode(Stage):
    """The visual_decode rule: reconstruct each visual token file into an mp4 of the size the
    tokenizer saw, shown at the source's aspect ratio, at its rate and length, and score every
    decoded frame against the source frame as the tokenizer saw it (PSNR, SSIM) into a TSV,
    before the mp4 encode touches it. The mp4's comment tag records the decoder (file,
    engine, self-check). The decoder is loaded once for all the videos."""

    def __init__(self, preset: Preset, checkpoint, device: str, batch_megapixels: float, crf: int,
                 x264_preset: str, weights_lock=None):  # fmt: skip
        self.preset, self.checkpoint, self.device = preset, Path(checkpoint), device
        self.batch_megapixels, self.crf, self.x264_preset = batch_megapixels, crf, x264_preset
        self.weights_lock = weights_lock

    def open(self) -> None:
        dev = resolve_device(self.device)
        lock = WeightsLock.optional(self.weights_lock)
        self.decoder = self.preset.tokenizer.decoder(self.checkpoint, self.preset, dev, lock)

    def prepare(self, item: Item):
        tokens_path, preset = item.inputs["tokens"], self.preset
        meta = read_metadata(tokens_path)
        tok = meta["tokenizer"]
        made = (tok.get("family", LEGACY_FAMILY), tok["kind"], tok["temporal"], tok["spatial"])
        if made != (preset.family, preset.kind, preset.temporal, preset.spatial):
            raise AvTokensError(
                f"{tokens_path}: made by a {made[0]} {made[1]}{made[2]}x{made[3]}x{made[3]} "
                f"tokenizer, but preset '{preset.name}' decodes {preset.family} {preset.kind}{preset.factors}"
            )
        picture = Picture.from_metadata(meta["picture"])
        source = item.inputs["source"]
        return meta, picture, FrameStream(source, picture, tok["window"], self.batch_megapixels)

    def run(self, item: Item, prepared) -> None:
        meta, picture, frames = prepared
        try:
            _decode(self, item.inputs["tokens"], item.inputs["source"], item.outputs["video"],
                    item.outputs["frame_metrics"], meta, picture, frames.windows)  # fmt: skip
        finally:
            frames.close()


def reconstruction_comment(decoder_record: dict, picture: Picture, video: dict) -> str:
    """The reconstruction's comment tag: its decoder, and where a preset has a timeline of its
    own, the stretch of the source it shows (seconds after its first frame), which the mux
    takes the audio of (`avtokens.media.mux`)."""
    said = {"avtokens_decoder": decoder_record}
    if picture.timeline is not None:
        start = picture.timeline.start_seconds
        said["avtokens_timeline"] = {"start": float(start), "duration": video["duration"]}
    return json.dumps(said, sort_keys=True)


def _decode(stage: VisualDecode, tokens_path, source, dest, frame_metrics, meta: dict, picture: Picture,
            source_frames) -> None:  # fmt: skip
    from safetensors import safe_open

    preset, decoder, batch_megapixels = stage.preset, stage.decoder, stage.batch_megapixels
    tok, video = meta["tokenizer"], meta["video"]
    fps, dev = Fraction(video["fps"]), decoder.device
    windows = plan_windows(video["frame_count"], tok["window"], preset.temporal)
    offsets = np.cumsum([0] + [w.latent_frames(preset.temporal) for w in windows])
    source_windows = host_frames(source_frames, dev)
    with (
        safe_open(str(tokens_path), framework="pt") as f,
        atomic_output(dest) as tmp,
        atomic_output(frame_metrics) as metrics_tmp,
        open(metrics_tmp, "w") as table,
        VideoWriter(
            tmp,
            picture.width,
            picture.height,
            fps,
            stage.crf,
            stage.x264_preset,
            # read at the first frames: by then the decoder's record says what decoded them
            comment=lambda: reconstruction_comment(decoder.record, picture, video),
            sample_aspect_ratio=picture.sample_aspect_ratio,
        ) as writer,
    ):
        latents = f.get_slice(meta["latent"]["tensor"])
        table.write("frame\twindow\tpsnr\tssim\n")

        def save(item):  # on a background thread: the mp4 encode stays off the model's path
            index, win, frames, psnr_values, ssim_values = item
            scores = zip(psnr_values.tolist(), ssim_values.tolist(), strict=True)
            for k, (p, q) in enumerate(scores):
                table.write(f"{win.start + k}\t{index}\t{p:.4f}\t{q:.6f}\n")
            writer.write(frames.cpu().numpy())
            progress.advance(len(frames))

        indexed = list(enumerate(windows))
        progress = Progress(f"{Path(tokens_path).name}: visual decode", video["frame_count"], "frames")
        with InOrderWorker(save) as saver:
            height, width = video["padded_height"], video["padded_width"]
            full_batch = windows_per_call(batch_megapixels, tok["window"], height, width)
            for batch in _batches(indexed, lambda b: b[1].padded_frames, batch_megapixels, height, width):
                tokens = torch.cat([latents[:, offsets[i] : offsets[i + 1]] for i, _ in batch])
                padded = batch[0][1].padded_frames
                with _explain_oom(dev, preset.tokenizer, "decoder", len(batch), padded, height, width,
                                  batch_megapixels):  # fmt: skip
                    decoded = decoder(tokens, full_batch)
                for (index, win), window_frames in zip(batch, decoded, strict=True):
                    originals = next(source_windows, None)
                    if originals is None or len(originals) != win.real_frames:
                        raise AvTokensError(f"{source}: no longer has the frames {tokens_path} was made from")
                    done = 0
                    for frames in model_output_to_frames(window_frames, win.real_frames, picture.height,
                                                         picture.width):  # fmt: skip
                        original = torch.as_tensor(originals[done : done + len(frames)]).to(
                            dev, non_blocking=True
                        )
                        part = Window(win.start + done, len(frames), len(frames))
                        saver.put((index, part, frames, psnr(original, frames), ssim(original, frames)))
                        done += len(frames)
                del decoded, window_frames  # before the next call: one batch's output alive at a time
        if next(source_windows, None) is not None:
            raise AvTokensError(f"{source}: has more frames than {tokens_path} was made from")
    log.info("%s: %d frames at %s fps -> %s", tokens_path, writer.frames, video["fps"], dest)

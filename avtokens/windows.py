"""How a video's frames are cut into tokenizer windows and latent frames.

The tokenizers are causal: a window of T = 1 + k*tc frames gives 1 + k latent
frames, the first standing for one frame and each later one for tc frames. Windows
are coded independently, so every window restarts that pattern.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    start: int  # index of the window's first frame in the video
    real_frames: int  # frames taken from the video
    padded_frames: int  # frames given to the model (the last real frame repeated)

    def latent_frames(self, temporal_factor: int) -> int:
        return latent_frame_count(self.padded_frames, temporal_factor)


def latent_frame_count(frames: int, temporal_factor: int) -> int:
    """Latent frames a causal tokenizer makes of `frames` (1 + k*tc) input frames."""
    return 1 + (frames - 1) // temporal_factor


def check_window_length(window: int, temporal_factor: int) -> None:
    if window < 1 + temporal_factor or (window - 1) % temporal_factor:
        raise ValueError(
            f"window {window} is not 1 + k*{temporal_factor} with k >= 1 "
            f"(for example {1 + 2 * temporal_factor} or {1 + 15 * temporal_factor})"
        )


def padded_length(real_frames: int, temporal_factor: int) -> int:
    """Smallest 1 + k*tc that holds `real_frames` frames."""
    if real_frames < 1:
        raise ValueError("a window needs at least one frame")
    k = -(-(real_frames - 1) // temporal_factor)
    return 1 + k * temporal_factor


def plan_windows(frame_count: int, window: int, temporal_factor: int) -> list[Window]:
    """The windows that cover `frame_count` frames, in order."""
    check_window_length(window, temporal_factor)
    windows = []
    for start in range(0, frame_count, window):
        real = min(window, frame_count - start)
        windows.append(Window(start, real, padded_length(real, temporal_factor)))
    return windows


def round_up(value: int, multiple: int) -> int:
    """`value` padded up to a multiple of `multiple` (a frame side to the spatial factor)."""
    return -(-value // multiple) * multiple


def video_latent_spans(frame_count: int, window: int, temporal_factor: int) -> list[tuple[int, int]]:
    """The frame span of every latent frame of a video of `frame_count` frames."""
    return latent_frame_spans(plan_windows(frame_count, window, temporal_factor), temporal_factor)


def latent_frame_spans(windows: list[Window], temporal_factor: int) -> list[tuple[int, int]]:
    """Video frame range [start, end) that each latent frame stands for, padding excluded."""
    spans = []
    for w in windows:
        spans.append((w.start, w.start + 1))
        for j in range(1, w.latent_frames(temporal_factor)):
            first = w.start + 1 + (j - 1) * temporal_factor
            spans.append((first, min(first + temporal_factor, w.start + w.real_frames)))
    return spans

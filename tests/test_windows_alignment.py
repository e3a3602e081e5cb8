"""Frame-count rule, windows, latent frame spans and the audio alignment arithmetic."""

from fractions import Fraction

import pytest
import torch

from avtokens.alignment import code_frame_count, code_frame_ranges, fixed_size_blocks
from avtokens.presets import grid_presets, make_preset
from avtokens.windows import latent_frame_spans, padded_length, plan_windows

SR, HOP = 44100, 512


@pytest.mark.parametrize("tc", [4, 8])
@pytest.mark.parametrize("frames", [1, 2, 8, 9, 16, 17, 18, 33, 34, 100, 121, 1000])
@pytest.mark.parametrize("window", [17, 33, 121])
def test_windows_cover_every_frame_once_and_follow_the_latent_rule(tc, frames, window):
    windows = plan_windows(frames, window, tc)
    assert sum(w.real_frames for w in windows) == frames
    assert [w.start for w in windows] == list(range(0, frames, window))
    for w in windows:
        assert (w.padded_frames - 1) % tc == 0 and w.padded_frames >= w.real_frames
        assert w.padded_frames - w.real_frames < tc  # minimal padding
        assert w.latent_frames(tc) == 1 + (w.padded_frames - 1) // tc
    spans = latent_frame_spans(windows, tc)
    assert len(spans) == sum(w.latent_frames(tc) for w in windows)
    covered = [f for start, end in spans for f in range(start, end)]
    assert covered == list(range(frames))  # in order, each frame exactly once
    assert all(end > start for start, end in spans)


def test_latent_count_of_the_upstream_window():
    # 17 frames give 3 latent frames at 8x and 5 at 4x; 121 frames give 16 at 8x.
    assert plan_windows(17, 17, 8)[0].latent_frames(8) == 3
    assert plan_windows(17, 17, 4)[0].latent_frames(4) == 5
    assert plan_windows(121, 121, 8)[0].latent_frames(8) == 16
    assert padded_length(10, 8) == 17 and padded_length(1, 8) == 1 and padded_length(9, 8) == 9


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(60)])
def test_code_ranges_tile_the_stream_without_drift_over_40_minutes(fps):
    frames = int(40 * 60 * fps)
    spans = latent_frame_spans(plan_windows(frames, 17, 8), 8)
    ranges = code_frame_ranges(spans, fps, SR, HOP)
    total = code_frame_count(frames, fps, SR, HOP)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # no gap, no overlap
    # The stream covers the video's duration to within one code frame.
    assert 0 <= total * HOP / SR - float(frames / fps) < HOP / SR


def test_eight_frames_at_25_fps_get_27_or_28_code_frames():
    fps = Fraction(25)
    spans = [(1 + 8 * i, 9 + 8 * i) for i in range(1000)]
    sizes = {end - start for start, end in code_frame_ranges(spans, fps, SR, HOP)}
    assert sizes == {27, 28}


def test_fixed_size_view_cuts_and_pads_each_latent_frame():
    codes = torch.arange(20).view(10, 2)
    blocks = fixed_size_blocks(codes, [(0, 1), (1, 5), (5, 10)], 3)
    assert blocks.shape == (3, 3, 2)
    assert blocks[0].tolist() == [[0, 1]] * 3  # padded with its last code frame
    assert blocks[1].tolist() == [[2, 3], [4, 5], [6, 7]]  # cut to 3


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"kind": "CV", "temporal": 4, "spatial": 16, "window": 17}, "temporal 4 exists only with spatial 8"),
        ({"kind": "XV", "temporal": 8, "spatial": 8, "window": 17}, "kind must be CV or DV"),
        ({"kind": "CV", "temporal": 8, "spatial": 8, "window": 20}, "window 20 is not 1 + k*8"),
        ({"kind": "CV", "temporal": 8, "spatial": 8, "window": 17, "weights": "x"}, "weights must be"),
    ],
)
def test_bad_presets_are_refused_with_a_reason(fields, message):
    with pytest.raises(ValueError, match="preset 'p'") as err:
        make_preset("p", fields)
    assert message in str(err.value)


def test_a_grid_names_its_presets_by_their_parameters_and_skips_unreleased_pairs():
    presets, skipped = grid_presets(
        {"kind": ["CV"], "temporal": [4, 8], "spatial": [8, 16], "window": [17, 21]}
    )
    assert sorted(presets) == ["CV4x8x8-w17", "CV4x8x8-w21", "CV8x16x16-w17", "CV8x8x8-w17"]
    assert presets["CV4x8x8-w21"] == {"kind": "CV", "temporal": 4, "spatial": 8, "window": 21}
    # 4x16x16 twice; window 21 is not 1 + k*8 for the two 8x pairs.
    assert len(skipped) == 4 and sum("4x16x16" in reason for reason in skipped) == 2


def test_an_empty_grid_adds_nothing_and_a_partial_one_is_refused():
    assert grid_presets({}) == ({}, [])
    with pytest.raises(ValueError, match="missing \\['window'\\]"):
        grid_presets({"kind": ["CV"], "temporal": [8], "spatial": [8]})

"""Frame-count rule, windows, latent frame spans and the audio alignment arithmetic."""

from fractions import Fraction

import pytest
import torch

from avtokens.alignment import (
    audio_block_size,
    code_frame_count,
    code_frame_ranges,
    fixed_size_blocks,
    nominal_block_size,
)
from avtokens.presets import Preset, grid_presets, make_preset
from avtokens.windows import (
    check_window_length,
    latent_frame_count,
    latent_frame_spans,
    padded_length,
    plan_windows,
    round_up,
    video_latent_spans,
)

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
        (
            {"kind": "CV", "temporal": 4, "spatial": 16, "window": 17},
            "no Cosmos tokenizer of release 0.1 is CV4x16x16",
        ),
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


def test_a_causal_tokenizer_makes_one_latent_frame_for_the_first_frame_and_one_per_full_group():
    # 8x: frame 0 alone, then only complete groups of 8 count (the released graphs drop the rest).
    counts = {1: 1, 2: 1, 8: 1, 9: 2, 16: 2, 17: 3, 24: 3, 25: 4, 121: 16}
    assert {frames: latent_frame_count(frames, 8) for frames in counts} == counts
    assert [latent_frame_count(frames, 4) for frames in (1, 4, 5, 8, 9, 17)] == [1, 1, 2, 2, 3, 5]


def test_window_lengths_are_one_frame_plus_at_least_one_group():
    for window, tc in ((5, 4), (9, 4), (9, 8), (17, 8), (121, 8)):
        check_window_length(window, tc)  # accepted
    for window, tc in ((1, 8), (1, 4), (8, 8), (16, 8), (18, 8), (4, 4), (7, 4)):
        with pytest.raises(ValueError):
            check_window_length(window, tc)
    # The message offers the two windows the README discusses: NVIDIA's 17 and the default 121.
    with pytest.raises(ValueError) as err:
        check_window_length(20, 8)
    assert str(err.value) == "window 20 is not 1 + k*8 with k >= 1 (for example 17 or 121)"
    with pytest.raises(ValueError, match=r"^window 1 is not 1 \+ k\*4 with k >= 1 \(for example 9 or 61\)$"):
        check_window_length(1, 4)


def test_padding_reaches_the_next_whole_group_and_an_empty_window_is_refused():
    assert [padded_length(n, 8) for n in (1, 2, 8, 9, 10, 16, 17, 18)] == [1, 9, 9, 9, 17, 17, 17, 25]
    assert [padded_length(n, 4) for n in (1, 2, 5, 6)] == [1, 5, 5, 9]
    with pytest.raises(ValueError, match="^a window needs at least one frame$"):
        padded_length(0, 8)


def test_frame_sides_round_up_to_the_spatial_factor():
    assert [round_up(v, 16) for v in (1, 15, 16, 17, 180, 720)] == [16, 16, 16, 32, 192, 720]
    assert [round_up(v, 8) for v in (1, 8, 9, 180)] == [8, 8, 16, 184]


def test_code_frames_start_at_the_first_code_frame_boundary_in_each_latent_frame():
    # 25 fps, 44.1 kHz, hop 512: video frame f starts at f/25 s, code frame k at k*512/44100 s.
    # Frame 1 starts at 0.04 s = code frame 3.45 -> 4; frame 9 at 0.36 s = 31.0 -> 32; frame 17
    # at 0.68 s = 58.6 -> 59.
    ranges = code_frame_ranges([(0, 1), (1, 9), (9, 17)], Fraction(25), SR, HOP)
    assert ranges == [(0, 4), (4, 32), (32, 59)]
    assert code_frame_count(17, Fraction(25), SR, HOP) == 59
    # A frame that starts exactly where a code frame does owns it: at 1 fps, frame 512 starts
    # at 512 s, the start of code frame 44100.
    assert code_frame_count(512, Fraction(1), SR, HOP) == 44100


def test_block_sizes_from_the_ranges_and_from_the_rates_alone():
    fps = Fraction(25)
    spans = video_latent_spans(17 * 10, 17, 8)
    ranges = code_frame_ranges(spans, fps, SR, HOP)
    # 8 frames at 25 fps are 0.32 s = 27.56 code frames: every full latent frame has 27 or 28.
    assert audio_block_size(ranges, spans, 8) == 27
    assert nominal_block_size(8, fps, SR, HOP) == 27
    assert nominal_block_size(8, Fraction(30000, 1001), SR, HOP) == 22  # 0.267 s = 22.98
    assert nominal_block_size(4, Fraction(24), SR, HOP) == 14  # 0.1667 s = 14.36
    # A video too short for a full latent frame: its largest latent frame's count. 5 frames at
    # 8x: frame 0 (code frames 0-3), frames 1-4 (code frames 4-17, up to 0.2 s = 17.2).
    short = video_latent_spans(5, 17, 8)
    assert short == [(0, 1), (1, 5)]
    assert audio_block_size(code_frame_ranges(short, fps, SR, HOP), short, 8) == 14
    with pytest.raises(ValueError):  # ranges and spans of different latent frames
        audio_block_size(ranges[:-1], spans, 8)


def test_fixed_size_view_pads_with_the_last_code_frame_or_zeros_when_there_is_none():
    codes = torch.arange(1, 21).view(10, 2)
    blocks = fixed_size_blocks(codes, torch.tensor([[0, 2], [2, 2], [2, 5]]), 3)
    assert blocks[0].tolist() == [[1, 2], [3, 4], [3, 4]]  # two code frames, the last repeated
    # Above 86 fps a video frame is shorter than a code frame, so a latent frame can own none.
    assert blocks[1].tolist() == [[0, 0]] * 3
    assert blocks[2].tolist() == [[5, 6], [7, 8], [9, 10]]  # exactly the block: unchanged


def test_presets_take_their_fields_and_the_documented_defaults():
    full = {"kind": "DV", "temporal": 8, "spatial": 16, "window": 33, "weights": "demo", "engine": "eager"}
    assert make_preset("a", full) == Preset(
        "a",
        "DV",
        8,
        16,
        33,
        "demo",
        "nvidia/Cosmos-0.1-Tokenizer-DV8x16x16",
        "eager",
        "cosmos",
        "0.1",
    )
    # Defaults: family cosmos, its release 0.1, window 121, official weights, NVIDIA's repo for
    # the factors, engine auto (the audio part: test_audio_codecs).
    assert make_preset("b", {"kind": "CV", "temporal": "4", "spatial": "8"}) == Preset(
        "b",
        "CV",
        4,
        8,
        121,
        "official",
        "nvidia/Cosmos-0.1-Tokenizer-CV4x8x8",
        "auto",
        "cosmos",
        "0.1",
    )
    assert make_preset("c", {"kind": "CV", "temporal": 8, "spatial": 8}, "demo").weights == "demo"
    # `repo` picks another official checkpoint; stand-ins exist for the released layouts only.
    other = {"kind": "CV", "temporal": 8, "spatial": 8, "repo": "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"}
    assert make_preset("d", other).repo == "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
    assert make_preset("e", {**other, "weights": "demo"}).repo == "nvidia/Cosmos-0.1-Tokenizer-CV8x8x8"
    assert make_preset("f", {**full, "weights": "official"}).is_discrete


@pytest.mark.parametrize(
    "fields, message",
    [
        (
            {"kind": "CV", "temporal": 4, "spatial": 16},
            "preset 'p': no Cosmos tokenizer of release 0.1 is CV4x16x16; it has CV4x8x8, CV8x8x8, "
            "CV8x16x16, DV4x8x8, DV8x8x8, DV8x16x16",
        ),
        ({"kind": "cv", "temporal": 8, "spatial": 8}, "preset 'p': kind must be CV or DV, not 'cv'"),
        (
            {"kind": "DV", "temporal": 8, "spatial": 8, "weights": "Demo"},
            "preset 'p': weights must be official or demo, not 'Demo'",
        ),
        (
            {"kind": "DV", "temporal": 8, "spatial": 8, "engine": "jit"},
            "preset 'p': engine must be one of auto, torchscript, eager, compiled (family cosmos), not 'jit'",
        ),
        (
            {"kind": "DV", "temporal": 4, "spatial": 8, "window": 8},
            "preset 'p': window 8 is not 1 + k*4 with k >= 1 (for example 9 or 61)",
        ),
    ],
)
def test_refusals_name_the_preset_the_setting_and_the_way_out(fields, message):
    with pytest.raises(ValueError) as err:
        make_preset("p", fields)
    assert str(err.value) == message


def test_every_engine_and_both_kinds_are_accepted():
    for kind in ("CV", "DV"):
        for engine in ("auto", "torchscript", "eager", "compiled"):
            preset = make_preset("p", {"kind": kind, "temporal": 8, "spatial": 8, "engine": engine})
            assert (preset.kind, preset.engine) == (kind, engine)


def test_grid_notes_name_what_was_left_out():
    _, skipped = grid_presets({"kind": ["DV"], "temporal": [4], "spatial": [16], "window": [17]})
    assert skipped == [
        "preset 'DV4x16x16-w17': no Cosmos tokenizer of release 0.1 is DV4x16x16; it has CV4x8x8, "
        "CV8x8x8, CV8x16x16, DV4x8x8, DV8x8x8, DV8x16x16"
    ]

"""Audio codecs behind one interface: the registry, presets that name a codec, grids and
refusals (pure Python, as the Snakefile reads them)."""

import dataclasses
import subprocess
import sys
from fractions import Fraction

import pytest

from avtokens.audio_codecs import AUDIO_CODECS, DEFAULT_CODEC, audio_codec
from avtokens.audio_codecs.base import overlapping_windows
from avtokens.planning import plan_tokens
from avtokens.presets import grid_presets, make_audio_setting, make_preset

CV = {"kind": "CV", "temporal": 8, "spatial": 8}


def test_the_codecs_state_their_clocks_and_codebooks():
    dac, mimi = audio_codec("dac"), audio_codec("mimi")
    assert DEFAULT_CODEC == "dac" and set(AUDIO_CODECS) == {"dac", "mimi"}
    assert (dac.sample_rate, dac.hop, dac.code_rate, dac.codebook_size) == (
        44100,
        512,
        Fraction(44100, 512),
        1024,
    )
    assert (mimi.sample_rate, mimi.hop, mimi.code_rate, mimi.codebook_size) == (
        24000,
        1920,
        Fraction(25, 2),
        2048,
    )
    assert list(dac.codebook_choices) == [9] and list(mimi.codebook_choices) == list(range(1, 33))
    assert (dac.setting(9), mimi.setting(8), mimi.setting(32)) == ("dac", "mimi-q8", "mimi-q32")


def test_each_codec_says_where_its_official_files_come_from_and_how_they_are_pinned():
    dac, mimi = audio_codec("dac"), audio_codec("mimi")
    assert dac.files == ("weights_44khz_8kbps_0.0.1.pth",) and dac.folder == "dac"
    assert dac.source({}) == {"url": "https://github.com/descriptinc/descript-audio-codec/releases/download/"
                                      "0.0.1/weights_44khz_8kbps_0.0.1.pth"}  # fmt: skip
    # The key lock files made before codecs were plug-ins pinned DAC under.
    assert dac.lock_key(dac.files[0]) == "descript/descript-audio-codec/weights_44khz_8kbps_0.0.1.pth"
    assert mimi.files == ("config.json", "model.safetensors") and mimi.source({}) == {"repo": "kyutai/mimi"}
    assert mimi.lock_key("model.safetensors") == "kyutai/mimi/model.safetensors"
    # The config's `codecs` points a codec elsewhere (a mirror), each codec by its own name.
    mirrors = {"codecs": {"dac": {"url": "file:///w.pth"}, "mimi": {"repo": "me/mimi"}}}
    assert dac.source(mirrors) == {"url": "file:///w.pth"} and mimi.source(mirrors) == {"repo": "me/mimi"}


def test_a_presets_audio_part_names_its_codec_and_codebooks_and_its_visual_part_none():
    default = make_audio_setting("a", CV, "demo")
    assert (default.codec, default.codebooks, default.name, default.weights) == ("dac", 9, "dac", "demo")
    mimi = make_audio_setting("b", {**CV, "codec": "mimi"})
    assert (mimi.codec, mimi.codebooks, mimi.name, mimi.sample_rate) == ("mimi", 8, "mimi-q8", 24000)
    assert make_audio_setting("c", {**CV, "codec": "mimi", "codebooks": 32}).name == "mimi-q32"
    visual = make_preset("b", {**CV, "codec": "mimi"})
    assert not {"codec", "codebooks"} & set(dataclasses.asdict(visual))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"codec": "encodec"}, "preset 'p': no audio codec 'encodec'; codecs: dac, mimi"),
        ({"codec": "mimi", "codebooks": 33}, "preset 'p': Mimi codes with 1 to 32 codebooks, not 33"),
        ({"codebooks": 4}, "preset 'p': DAC 44.1 kHz codes with 9 codebooks, not 4"),
    ],
)
def test_what_a_codec_does_not_have_is_refused(fields, message):
    with pytest.raises(ValueError) as err:
        make_audio_setting("p", {**CV, **fields})
    assert str(err.value) == message


def test_a_grid_spans_codecs_and_names_the_others_presets_after_them():
    grid = {"kind": ["CV"], "temporal": [8], "spatial": [8, 16], "window": [17], "codec": ["dac", "mimi"]}
    presets, skipped = grid_presets(grid)
    assert sorted(presets) == ["CV8x16x16-w17", "CV8x16x16-w17-mimi", "CV8x8x8-w17", "CV8x8x8-w17-mimi"]
    assert presets["CV8x8x8-w17-mimi"]["codec"] == "mimi" and "codec" not in presets["CV8x8x8-w17"]
    assert not skipped


def test_the_token_plan_counts_each_codecs_codes():
    """At 25 fps, 8 frames a latent frame: DAC carries 27.56 code frames of 9 codes, Mimi 4 of 8."""
    dac = plan_tokens(250, Fraction(25), 64, 64, 8, 8, 121)
    mimi = plan_tokens(250, Fraction(25), 64, 64, 8, 8, 121, audio_codec("mimi"), 8)
    assert (dac.audio_block, dac.audio_tokens) == (27, 862 * 9)  # ceil(10 s x 86.13)
    assert (mimi.audio_block, mimi.audio_tokens) == (4, 125 * 8)


def test_overlapping_windows_tile_the_range_with_clipped_context():
    windows = list(overlapping_windows(10, 4, 2, 1))
    assert windows == [(0, 4, 0, 5), (4, 8, 2, 9), (8, 10, 6, 10)]
    assert list(overlapping_windows(3, 4, 250, 0)) == [(0, 3, 0, 3)]


def test_the_registry_imports_without_torch():
    """The Snakefile reads it while it plans, once per cluster job."""
    code = "import sys, avtokens.audio_codecs, avtokens.presets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

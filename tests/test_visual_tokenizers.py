"""Tokenizer families behind one interface: the registry's presets and refusals."""

import pytest

from avtokens.presets import make_preset
from avtokens.visual_tokenizers import VISUAL_TOKENIZERS


def test_a_family_fills_in_its_release_model_window_and_engine():
    # NVIDIA's later Cosmos releases: the same family, their own repos.
    cosmos = {"kind": "CV", "temporal": 8, "spatial": 8}
    assert make_preset("a", {**cosmos, "release": 1.0}).repo == "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
    tokenize1 = make_preset("b", {"kind": "DV", "temporal": 4, "spatial": 8, "release": "tokenize1"})
    assert tokenize1.repo == "nvidia/Cosmos-Tokenize1-DV4x8x8-360p" and tokenize1.window == 121
    assert tokenize1.tokenizer is VISUAL_TOKENIZERS["cosmos"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"family": "vq"}, "preset 'p': no tokenizer family 'vq'; families: cosmos"),
        ({"kind": "DV", "temporal": 8, "spatial": 8, "release": "1.0"},
         "preset 'p': no Cosmos tokenizer of release 1.0 is DV8x8x8; it has CV8x8x8, DV8x16x16; "
         "release 0.1 has it"),
        ({"kind": "CV", "temporal": 8, "spatial": 8, "release": "2.0"},
         "preset 'p': family cosmos has releases 0.1, 1.0, tokenize1, not '2.0'"),
        ({"kind": "CV"}, "preset 'p': give temporal, spatial (family cosmos, release 0.1 has CV4x8x8, "
                         "CV8x8x8, CV8x16x16, DV4x8x8, DV8x8x8, DV8x16x16)"),
    ],
)  # fmt: skip
def test_what_a_family_does_not_have_is_refused_naming_what_it_has(fields, message):
    with pytest.raises(ValueError) as err:
        make_preset("p", fields)
    assert str(err.value).startswith(message)

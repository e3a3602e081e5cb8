"""Mimi through transformers, on a stand-in saved with `save_pretrained` and loaded through the
same path as kyutai/mimi: our window-by-window coding against transformers' own whole-clip
`encode` and `decode` of the same audio."""

import json

import pytest
import torch
from helpers import sample_reader, sweep
from transformers import MimiModel

from avtokens import AvTokensError
from avtokens.audio_codecs.mimi import MIMI, STAND_IN_FILE

CPU = torch.device("cpu")
SECONDS = 30  # 375 code frames: the decoder's context (250) and several windows fit


@pytest.fixture(scope="module")
def folder(demo_weights):
    return demo_weights / MIMI.folder


@pytest.fixture(scope="module")
def network(folder):
    return MimiModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def audio():
    return sweep(SECONDS * MIMI.sample_rate, MIMI.sample_rate)


def encode(model, audio, window):
    return torch.cat(list(model.encode(sample_reader(audio), len(audio) // MIMI.hop, window)))


@pytest.mark.parametrize("codebooks", [8, 3])
def test_streamed_windows_give_transformers_whole_clip_codes(folder, network, audio, codebooks):
    model = MIMI.load(folder, codebooks, CPU, None)
    with torch.inference_mode():
        whole = network.encode(audio.view(1, 1, -1), num_quantizers=codebooks).audio_codes[0].T
    assert whole.shape == (SECONDS * 25 // 2, codebooks)
    assert len(whole[:, 0].unique()) > 50  # the stand-in's codes vary: a wrong seam would show
    for window in (1, 37, 1000):
        assert torch.equal(encode(model, audio, window), whole), window


def test_fewer_codebooks_are_the_first_of_more(folder, audio):
    """Residual quantization: the first q codebooks' codes do not depend on how many follow."""
    eight = encode(MIMI.load(folder, 8, CPU, None), audio, 100)
    three = encode(MIMI.load(folder, 3, CPU, None), audio, 100)
    assert torch.equal(three, eight[:, :3])


def test_windowed_decode_matches_transformers_whole_clip_decode(folder, network, audio):
    """Each window is decoded with one attention span of codes before it: the difference from a
    whole-clip decode is float rounding (measured: under 1e-6 of the peak; README, "Audio codecs").
    Without that context the seams differ by far more."""
    model = MIMI.load(folder, 8, CPU, None)
    codes = encode(model, audio, 1000)
    with torch.inference_mode():
        whole = network.decode(codes.T.unsqueeze(0)).audio_values.view(-1)
    windowed = torch.cat(list(model.decode(codes, 100)))
    assert windowed.shape == whole.shape == (len(codes) * MIMI.hop,)
    peak = whole.abs().max()
    tolerance = peak * 2**-16  # 128 float32 steps at the peak; the difference found is ~8
    assert (windowed - whole).abs().max() <= tolerance
    model.decode_context = 0
    assert (torch.cat(list(model.decode(codes, 100))) - whole).abs().max() > 100 * tolerance


def test_the_record_says_what_was_loaded(folder):
    model = MIMI.load(folder, 8, CPU, None)
    assert model.stand_in and (folder / STAND_IN_FILE).is_file()
    record = model.record
    assert (record["name"], record["repo"], record["codebooks"], record["hop"]) == (
        "mimi",
        "kyutai/mimi",
        8,
        1920,
    )
    assert (
        record["decode_context_frames"] == 250 and len(record["sha256"]) == len(record["config_sha256"]) == 64
    )


def test_a_mimi_of_another_rate_or_too_few_codebooks_is_refused(folder, tmp_path):
    for name in MIMI.files:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(AvTokensError, match="has 32 codebooks, not 33"):
        MIMI.load(tmp_path, 33, CPU, None)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "sampling_rate": 16000}))
    with pytest.raises(AvTokensError, match="a Mimi of 16000 Hz, .* the Mimi codec is 24000 Hz"):
        MIMI.load(tmp_path, 8, CPU, None)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(AvTokensError, match="missing model.safetensors .*kyutai/mimi"):
        MIMI.load(tmp_path, 8, CPU, None)

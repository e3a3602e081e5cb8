"""Finite scalar quantisation: the Cosmos DV codebook, checked against the definition.

FSQ (Mentzer et al. 2023, as Cosmos' FSQuantizer implements it): channel c, with L levels,
is bounded as tanh(z + shift) * (L - 1) * (1 + 1e-3) / 2 - offset (offset 1/2 for even L,
shift = atanh(offset / half range) so that z = 0 lands on the middle level) and rounded,
giving L integer steps; the code is the step over L // 2 and the index is the number
whose mixed-radix digits (least significant first, radices 8, 8, 8, 5, 5, 5) are the steps
plus L // 2.
"""

import math

import pytest
import torch

from avtokens.visual_tokenizers.cosmos.fsq import CODEBOOK_SIZE, LEVELS, FiniteScalarQuantizer


def quantize(values, dtype=torch.float32):
    """One latent position per row of `values` [n, 6] -> (indices [n], codes [n, 6]), by a
    quantizer cast to `dtype` with its network (bf16 on a GPU) and given float32 latents."""
    z = torch.tensor(values, dtype=torch.float32).T.reshape(1, 6, len(values), 1, 1)
    indices, codes = FiniteScalarQuantizer().to(dtype)(z)
    return indices.flatten().tolist(), codes.reshape(6, len(values)).T.tolist()


def digits_of(index):
    """The mixed-radix digits of an index, least significant first, by long division."""
    digits = []
    for levels in LEVELS:
        digits.append(index % levels)
        index //= levels
    return digits


def test_the_codebook_has_one_entry_per_combination_of_levels():
    assert LEVELS == (8, 8, 8, 5, 5, 5) and CODEBOOK_SIZE == 8**3 * 5**3 == 64000


def test_shapes_and_dtypes():
    fsq = FiniteScalarQuantizer()
    indices, codes = fsq(torch.zeros(2, 6, 3, 4, 5))
    assert indices.shape == (2, 3, 4, 5) and indices.dtype == torch.int32
    assert codes.shape == (2, 6, 3, 4, 5) and codes.dtype == torch.float32
    assert fsq.indices_to_codes(indices).shape == (2, 6, 3, 4, 5)


def test_the_quantizer_has_no_state_to_load():
    # Its levels are constants of the architecture, not weights: a checkpoint carries none.
    fsq = FiniteScalarQuantizer()
    assert dict(fsq.state_dict()) == {} and not list(fsq.parameters())


def test_zero_is_the_middle_code_and_the_extremes_are_the_first_and_last_index():
    (middle, top, bottom), codes = quantize([[0.0] * 6, [20.0] * 6, [-20.0] * 6])
    # Steps 0 are digits L // 2: 4 for the three 8-level channels, 2 for the 5-level ones.
    assert middle == 4 + 4 * 8 + 4 * 64 + 2 * 512 + 2 * 2560 + 2 * 12800 == 32036
    assert top == CODEBOOK_SIZE - 1 and bottom == 0
    assert codes[0] == [0.0] * 6
    # Even levels are lopsided: 8 levels are the steps -4..3, so codes -1..0.75; 5 are -2..2.
    assert codes[1] == [0.75, 0.75, 0.75, 1.0, 1.0, 1.0]
    assert codes[2] == [-1.0] * 6


# A GPU run casts the network, quantizer included, to bf16: the bounds must not move with it.
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("levels", [8, 5])
def test_each_channel_rounds_at_the_half_steps_of_its_bounded_value(levels, dtype):
    """The boundary between steps k and k + 1 is where the bounded value is k + 1/2."""
    half_range = (levels - 1) * (1 + 1e-3) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    shift = math.atanh(offset / half_range)
    channel = LEVELS.index(levels)
    for step in range(-(levels // 2), levels - levels // 2 - 1):
        # bounded value = tanh(z + shift) * half_range - offset = step + 1/2
        boundary = math.atanh((step + 0.5 + offset) / half_range) - shift
        for z, expected in ((boundary - 1e-4, step), (boundary + 1e-4, step + 1)):
            values = [[0.0] * 6]
            values[0][channel] = z
            (index,), (codes,) = quantize(values, dtype)
            assert codes[channel] == expected / (levels // 2), (levels, step, z)
            assert digits_of(index)[channel] == expected + levels // 2


def test_indices_count_in_mixed_radix_and_decode_to_their_codes():
    fsq = FiniteScalarQuantizer()
    every = torch.arange(CODEBOOK_SIZE, dtype=torch.int32).view(1, -1, 1, 1)
    codes = fsq.indices_to_codes(every)[0, :, :, 0, 0].T  # [64000, 6]
    for index in (0, 1, 7, 8, 63, 64, 511, 512, 2559, 2560, 12799, 12800, 32036, 63999):
        expected = [(d - n // 2) / (n // 2) for d, n in zip(digits_of(index), LEVELS, strict=True)]
        assert codes[index].tolist() == expected, index
    assert len(set(map(tuple, codes.tolist()))) == CODEBOOK_SIZE  # every index its own code
    # and quantising those codes' pre-images gives the indices back
    halves = torch.tensor([(n - 1) * (1 + 1e-3) / 2 for n in LEVELS]).view(1, 6)
    offsets = torch.tensor([0.5 if n % 2 == 0 else 0.0 for n in LEVELS]).view(1, 6)
    steps = codes * torch.tensor([n // 2 for n in LEVELS]).view(1, 6)
    z = torch.atanh((steps + offsets) / halves) - torch.atanh(offsets / halves)
    indices, again = fsq(z.T.reshape(1, 6, CODEBOOK_SIZE, 1, 1))
    assert torch.equal(indices.flatten(), every.flatten())
    assert torch.equal(again[0, :, :, 0, 0].T, codes)


def test_random_latents_round_trip_through_their_indices():
    fsq = FiniteScalarQuantizer()
    z = torch.randn(2, 6, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2
    indices, codes = fsq(z)
    assert 0 <= int(indices.min()) and int(indices.max()) < CODEBOOK_SIZE
    assert torch.equal(fsq.indices_to_codes(indices), codes)

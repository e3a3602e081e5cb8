"""Model calls sized by frames x pixels, and a device out of memory explained in one line."""

import pytest
import torch

from avtokens import AvTokensError
from avtokens.visual import _batches, _explain_oom, windows_per_call
from avtokens.visual_tokenizers.cosmos import COSMOS
from avtokens.windows import plan_windows


def test_short_windows_batch_and_long_ones_run_alone():
    assert windows_per_call(64, 17, 720, 1280) == 4  # the default budget: four 17-frame windows at 720p
    assert windows_per_call(64, 121, 720, 1280) == 1
    assert windows_per_call(64, 121, 1088, 1920) == 1  # over the budget, yet one window always runs
    assert windows_per_call(64, 17, 184, 320) == 63


def test_batches_hold_equal_shapes_within_the_budget():
    windows = plan_windows(17 * 10 + 5, 17, 8)  # ten full windows, then one of 5 frames (padded to 9)
    batches = list(_batches(windows, lambda w: w.padded_frames, 64, 720, 1280))
    assert [len(b) for b in batches] == [4, 4, 2, 1]
    assert [w for b in batches for w in b] == windows  # in order, each once
    assert all(len({w.padded_frames for w in b}) == 1 for b in batches)


def oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")


def test_running_out_of_memory_names_the_setting_to_lower():
    device = torch.device("cuda:0")
    with pytest.raises(AvTokensError) as err, _explain_oom(device, COSMOS, "encoder", 1, 121, 1088, 1920, 64):
        oom()
    assert str(err.value) == (
        "cuda:0: one window of 121 frames at 1920x1088 does not fit in memory for the Cosmos encoder; "
        "lower the preset's `window` (now 121), for example to 33 or 17"
    )
    with pytest.raises(AvTokensError) as err, _explain_oom(device, COSMOS, "decoder", 4, 17, 720, 1280, 64):
        oom()
    assert str(err.value) == (
        "cuda:0: 4 windows of 17 frames at 1280x720 (63 megapixel-frames) do not fit in memory for the "
        "Cosmos decoder; lower `batch_megapixels` (now 64)"
    )
    with pytest.raises(ValueError), _explain_oom(device, COSMOS, "decoder", 4, 17, 720, 1280, 64):
        raise ValueError("other errors pass through")

"""Device choice: CPU here, and a GPU of its own for each local job on a multi-GPU machine."""

import threading

import pytest
import torch

from avtokens import AvTokensError
from avtokens.devices import claim_gpu, resolve_device


def test_auto_is_the_cpu_without_a_gpu_and_cuda_is_refused_clearly():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(AvTokensError, match="PyTorch sees no CUDA GPU"):
        resolve_device("cuda")


def test_each_claim_gets_a_different_gpu_and_waits_when_all_are_taken(tmp_path):
    ids = ["GPU-a", "GPU-b"]
    first, first_claim = claim_gpu(ids, tmp_path)
    second, second_claim = claim_gpu(ids, tmp_path)
    assert {first, second} == {0, 1}
    third = {}

    def claim_third():
        third["index"], third["claim"] = claim_gpu(ids, tmp_path, 0.05)

    waiter = threading.Thread(target=claim_third)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # both GPUs are held: it waits
    second_claim.close()  # the job on the second GPU ends
    waiter.join(5)
    assert third["index"] == second
    first_claim.close()
    third["claim"].close()


def test_a_single_gpu_needs_no_claim(tmp_path):
    assert claim_gpu(["GPU-a"], tmp_path) == (0, None)
    assert not list(tmp_path.iterdir())

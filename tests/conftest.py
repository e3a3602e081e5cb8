"""Session fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures that run the whole workflow, or build the released models' full-size networks, once
# for the tests of their module that read them. A test that uses one is in the `workflow` tier,
# as is a test marked so itself: `make test` runs every tier, `make test-fast` leaves this one
# out (docs/testing.md).
SHARED_RUNS = {"run", "report", "both_modes", "inputs_run", "official", "data_run", "cluster",
               "release_files", "mirrored_dv4x8x8"}  # fmt: skip


def pytest_collection_modifyitems(items):
    for item in items:
        if SHARED_RUNS & set(item.fixturenames):
            item.add_marker(pytest.mark.workflow)


@pytest.fixture(scope="session")
def demo_weights(tmp_path_factory) -> Path:
    """Stand-in weights for all six released factor pairs and DAC, in the official layout."""
    from avtokens.demo_weights import write_cosmos_stand_in, write_dac_stand_in
    from avtokens.presets import DAC_WEIGHTS_FILE, RELEASED_FACTORS, default_model_name

    root = tmp_path_factory.mktemp("weights")
    for kind in ("CV", "DV"):
        for temporal, spatial in RELEASED_FACTORS:
            folder = root / default_model_name(kind, temporal, spatial)
            write_cosmos_stand_in(folder, kind == "DV", temporal, spatial)
    write_dac_stand_in(root / "dac" / DAC_WEIGHTS_FILE)
    return root

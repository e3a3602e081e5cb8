"""Session fixtures shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import stand_in_weights

# One torch thread per test process, and in the processes they start (set before torch is
# imported, and before xdist starts its workers): the suite runs a process per core, so more
# threads only wait on each other (measured: 3 of the suite's 30 CPU-minutes). Workflow jobs
# still take their rule's threads, up to the run's --cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Fixtures that run the whole workflow, or build the released models' full-size networks, once
# for the tests of their module that read them. A test that uses one is in the `workflow` tier,
# as is a test marked so itself: `make test` runs every tier, `make test-fast` leaves this one
# out (docs/testing.md).
SHARED_RUNS = {"run", "report", "both_modes", "inputs_run", "official", "data_run", "cluster",
               "release_files", "mirrored_dv4x8x8", "shaped_run"}  # fmt: skip


# The modules that take longest (CPU seconds per module, 2026-12-06: docs/testing.md), longest
# first: with a process per core and a module to a process, the slowest ones start first and
# the short ones fill in behind them, instead of one long module running on alone at the end.
# SLURM's first: its runs mostly wait on the cluster, leaving the cores to the modules beside them.
SLOWEST_MODULES = ["test_slurm.py", "test_shards.py", "test_benchmarks.py", "test_engines.py",
                   "test_make_run.py", "test_object_storage.py", "test_inputs.py", "test_workflow.py",
                   "test_tokenize_video.py", "test_checkpoints.py", "test_module.py", "test_wan.py",
                   "test_interrupted.py", "test_data.py", "test_ddp.py", "test_shaping.py",
                   "test_cosmos_network.py", "test_picture.py"]  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by the marker
def pytest_collection_modifyitems(items):
    for item in items:
        if SHARED_RUNS & set(item.fixturenames):
            item.add_marker(pytest.mark.workflow)


class SlowestModulesFirst:
    @pytest.hookimpl(trylast=True)  # after pytest-random-order has shuffled them
    def pytest_collection_modifyitems(self, items):
        """A stable sort: the tests within each module, and the other modules, stay shuffled.
        xdist's own reordering (modules with the most tests first) is off in addopts."""
        rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config):
    config.pluginmanager.register(SlowestModulesFirst(), "slowest-modules-first")


@pytest.fixture(scope="session")
def demo_weights() -> Path:
    """Stand-in weights for all six released factor pairs and DAC, in the official layout."""
    return stand_in_weights()

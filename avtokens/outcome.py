"""Whether a run finished every listed video, decided by the last job of the DAG.

Snakemake's `onsuccess`/`onerror` handlers are dropped when a workflow is used as a module,
and are not called when there is nothing to do; a job is neither. Its output exists only
after a run in which every listed video finished, so an outer workflow can depend on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.shards import settle_failures


def check_run(output, *, sheet: str, videos: Mapping[str, str], left_out: Mapping[str, str],
              presets: list[str], records: Iterable = (), failures_table=None) -> None:  # fmt: skip
    """Write `output` (the videos and presets done) if every video of `sheet` finished.
    Otherwise fail with one line naming what did not: videos `left_out` because their files
    could not be read, and in shard mode the videos that failed inside shard jobs (their
    `records`; see `settle_failures`, which also lists them in `failures_table`)."""
    problems = []
    if failures_table is not None:
        failed = settle_failures(records, videos, Path(failures_table))
        if failed:
            problems.append(f"{failed}. Fix or replace those files, or remove their rows from {sheet}, and "
                            "run again: the next run retries them and redoes nothing else.")  # fmt: skip
    if left_out:
        problems.append(left_out_message(sheet, left_out))
    if problems:
        raise AvTokensError(" ".join(problems))
    with atomic_output(output) as tmp:
        done = {"videos": len(videos), "presets": presets}
        tmp.write_text(json.dumps(done, indent=1) + "\n", encoding="utf-8")


def written_since(path, moment: float) -> bool:
    """Whether `path` exists and was written at or after `moment` (a time.time())."""
    return os.path.exists(path) and os.path.getmtime(path) >= moment


def left_out_message(sheet: str, left_out: Mapping[str, str]) -> str:
    return (f"{len(left_out)} video(s) of {sheet} do not exist or cannot be read and were left out: "
            f"{', '.join(left_out.values())}. Fix their paths or remove their rows, and run "
            "again.")  # fmt: skip

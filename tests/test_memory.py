"""Memory stays flat with length: the memory benchmark, in a CI-sized form.

The full-size figures (1 and 20 minutes of 640x480 at 30 fps) are in docs/benchmarks.md;
here the frame rate is low so that the test stays short, while the audio and the number of
windows still grow tenfold.
"""

import json
import subprocess
import sys

from avtokens.workflow import REPO


def test_every_rule_needs_no_more_memory_for_ten_minutes_than_for_one(tmp_path):
    report = tmp_path / "memory.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--minutes", "1", "10", "--fps", "1",
         "--size", "640x480", "--max-ratio", "1.2", "--json", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    record = json.loads(report.read_text())
    rules = set(record["ratios"])
    assert {"visual_encode", "visual_decode", "audio_encode", "audio_decode", "extract_wav",
            "summarize", "compare_video"} <= rules  # fmt: skip
    assert max(record["ratios"].values()) <= 1.2, proc.stdout

"""`.ci/gpu --smoke`: the GPU proof's every step, on the CPU, tiny and short.

The GPU script runs only when a GPU machine is lent, which is rare; this
test runs the same script with `--smoke` (a tiny Qwen3-shaped checkpoint,
a second or two per step) so that a step broken by a change in the code it
calls fails here, not on the next GPU loan. It checks that every step wrote
its part: the capacity of both servers, the engine sweep, the breakdowns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "MODEL_DIR": str(tmp_path / "model")}
    finished = subprocess.run([str(ROOT / ".ci" / "gpu"), "--smoke"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-run.tar.gz", "log.txt", "report.md"]
    report = (out / "report.md").read_text()
    assert "not written" not in report and "failed" not in report
    assert "| multi-item on | " in report and "| multi-item off | " in report
    with tarfile.open(out / "gpu-run.tar.gz") as archive:
        names = set(archive.getnames())
        assert {"run/capacity-mis/sweep.json", "run/capacity-off/sweep.json", "run/engine/engine.json",
                "run/breakdown/mis.md", "run/breakdown/off.md", "run/tests.txt"} <= names
        for name in ("mis", "off"):
            sweep = json.load(archive.extractfile(f"run/capacity-{name}/sweep.json"))
            assert sweep["capacity"]["candidates_per_s"] > 0
        engine = json.load(archive.extractfile("run/engine/engine.json"))
        assert [p["requests"] for p in engine["points"]] == [1, 2]
        assert all(p["candidates_per_second"] > 0 for p in engine["points"])

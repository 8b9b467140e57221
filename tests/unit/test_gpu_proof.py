"""The GPU proof's pieces that need no GPU: its workload, its checkpoint's
configuration, its breakdown's arithmetic and its report."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

from loadtest.bench.gpu.breakdown import STAGES, stages_of, summarise
from loadtest.bench.gpu.checkpoint import QWEN3_0_6B, TINY
from loadtest.bench.gpu.report import report
from loadtest.cli import build_parser
from loadtest.workload import PUBLISHED_WORKLOAD

ROOT = Path(__file__).resolve().parents[2]


def test_the_scripts_workload_flags_are_the_published_workload():
    script = (ROOT / ".ci" / "gpu").read_text()
    flags = re.search(r"WORKLOAD=\((.*?)\)", script, re.S).group(1)
    args = build_parser().parse_args(["capacity", *shlex.split(flags)])
    assert dict(args.tasks) == dict(PUBLISHED_WORKLOAD.tasks)
    assert (args.candidates, args.history) == (PUBLISHED_WORKLOAD.candidates, PUBLISHED_WORKLOAD.history)
    assert (args.members, args.repeat_share) == (PUBLISHED_WORKLOAD.members, PUBLISHED_WORKLOAD.repeat_share)


def test_the_checkpoint_has_qwen3_0_6b_public_configuration():
    # 28 layers of 16 query heads and 8 key/value heads of 128, hidden 1,024, MLP 3,072: about 0.6 B
    # parameters with the tied 151,936-entry embedding.
    c = QWEN3_0_6B
    layer = c["hidden_size"] * c["head_dim"] * (2 * c["num_attention_heads"] + 2 * c["num_key_value_heads"]) \
        + 3 * c["hidden_size"] * c["intermediate_size"]
    total = c["num_hidden_layers"] * layer + c["vocab_size"] * c["hidden_size"]
    assert 0.59e9 < total < 0.61e9
    assert TINY["num_attention_heads"] % TINY["num_key_value_heads"] == 0 and not TINY["use_sliding_window"]


def test_each_stage_is_its_share_of_the_clients_time():
    timing = SimpleNamespace(prepare_seconds=0.002, queue_seconds=0.010, engine_seconds=0.030,
                             total_seconds=0.043)
    stages = stages_of(0.050, timing)
    assert list(stages) == list(STAGES)
    assert abs(sum(stages.values()) - 0.050) < 1e-12
    assert abs(stages["gRPC and client"] - 0.007) < 1e-12 and abs(stages["server, other"] - 0.001) < 1e-12
    table = summarise([stages, stages], 2)
    assert "| engine | 30.00 | 30.00 | 60% |" in table


def test_the_report_says_what_is_missing(tmp_path):
    run = tmp_path / "run"
    (run / "capacity-mis").mkdir(parents=True)
    (run / "capacity-mis" / "sweep.json").write_text(json.dumps(
        {"capacity": {"candidates_per_s": 5000.0, "p99_ms": 321.0}}))
    text = report(run)
    assert "| multi-item on | 5,000 | 321 | 125% |" in text
    assert "| multi-item off | (no sweep.json" in text
    assert "engine.md not written" in text

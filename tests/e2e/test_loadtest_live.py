"""The load generator end to end: its command line, in a subprocess as an
operator runs it, against a real server (torch engine) on a real localhost
port, and the files it writes. Small and short: this checks the tool, it does
not measure the server (the deadline is generous so a busy machine cannot
turn the check into a timing test)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
import pytest_asyncio
from live_server import running_server

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PNG = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server():
    async with running_server(engine="torch") as running:
        yield running


def addresses(server) -> list[str]:
    return [
        "--target", f"{server.config.host}:{server.endpoints.grpc_port}",
        "--metrics-url", f"http://{server.config.metrics_host}:{server.endpoints.metrics_port}/metrics",
    ]


async def command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command while this event loop keeps serving."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, *args], capture_output=True, text=True,
                                   timeout=300)


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG, path


async def test_an_open_loop_run_writes_a_sensible_summary_records_and_plots(server, tmp_path):
    out = tmp_path / "run"
    completed = await command(
        "-m", "loadtest", "run", *addresses(server), "--rate", "5", "--arrivals", "fixed", "--duration", "3",
        "--candidates", "4", "--history", "2-4", "--tasks", "job_apply=1,feed_engagement=1",
        "--timeout", "60", "--slo-ms", "500", "--seed", "0", "--no-progress", "--out", str(out),
        "--server-pid", str(os.getpid()),  # the server runs in this test's process
    )
    assert completed.returncode == 0, completed.stderr
    assert "candidates/s" in completed.stdout
    assert "ms CPU per candidate" in completed.stdout
    host_cost = json.loads((out / "host_cost.json").read_text())
    assert host_cost["ok_candidates"] == 60
    assert host_cost["cpu_s"]["server"] > 0 and host_cost["cpu_s"]["load generator"] > 0
    assert host_cost["cpu_s_per_candidate"]["server"] == host_cost["cpu_s"]["server"] / 60

    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == "brew.loadtest.summary/1"
    assert summary["run"]["mode"] == "open-loop" and summary["run"]["rate"] == 5
    # Fixed arrivals at 5/s for 3 s: exactly 15 requests, every one sent and answered.
    assert summary["requests"] == {"total": 15, "sent": 15, "ok": 15, "client_rejected": 0}
    assert summary["errors"] == {}
    assert summary["throughput"]["ok_candidates"] == 60
    assert summary["throughput"]["candidates_per_s"] > 0
    assert summary["wall_s"] >= 3
    for latency in summary["latency_ms"].values():
        assert latency["count"] == 15
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert summary["latency_ms"]["from_intended"]["max"] >= summary["latency_ms"]["from_sent"]["max"]
    assert 0 <= summary["goodput"] <= 1
    # The server saw the same run.
    seen = summary["server"]
    assert seen["requests"] == {"OK": 15}
    assert seen["batches"] >= 1 and seen["mean_batch_candidates"] > 0
    assert seen["mean_queue_ms"] >= 0
    assert 0 <= seen["cached_token_share"] < 1
    assert seen["rejections"] == {}

    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert len(records) == 15
    assert [r["index"] for r in records] == list(range(15))
    assert {r["status"] for r in records} == {"OK"} and {r["candidates"] for r in records} == {4}
    assert all(r["intended"] <= r["sent"] + 0.002 and r["sent"] < r["end"] for r in records)
    assert_png(out / "latency_over_time.png")
    assert_png(out / "latency_percentiles.png")


async def test_brew_loadtest_capacity_writes_the_sweep(server, tmp_path):
    out = tmp_path / "capacity"
    completed = await command(
        "-m", "brew.cli", "loadtest", "capacity", *addresses(server), "--rates", "2", "--arrivals", "fixed",
        "--duration", "2", "--candidates", "2", "--history", "2-4", "--timeout", "60", "--slo-ms", "60000",
        "--pause", "0", "--warmup", "1", "--no-progress", "--out", str(out),
        "--confirm", "0", "--saturation-callers", "0",  # one window per rate: this test is about the files
    )
    assert completed.returncode == 0, completed.stderr
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["format"] == "brew.loadtest.sweep/1"
    assert [(step["rate"], step["good"]) for step in sweep["steps"]] == [(2, True)]
    assert sweep["capacity"]["rate"] == 2 and sweep["capacity"]["candidates_per_s"] > 0
    assert sweep["steps"][0]["summary"]["requests"]["ok"] == 4
    step_dir = out / "step-00-rate-2"
    assert len((step_dir / "requests.jsonl").read_text().splitlines()) == 4
    assert_png(out / "sweep.png")
    assert_png(step_dir / "latency_over_time.png")
    assert "capacity: 2 requests/s" in completed.stdout
    assert (out / "warmup" / "summary.json").exists()  # run first, kept apart from the steps


async def test_a_short_soak_samples_the_server_memory_and_judges_it(server, tmp_path):
    out = tmp_path / "soak"
    # The server runs in this process: its pid is ours.
    completed = await command(
        "-m", "loadtest", "soak", *addresses(server), "--server-pid", str(os.getpid()), "--rate", "3",
        "--arrivals", "fixed", "--duration", "4", "--settle", "1", "--window", "1", "--sample-interval", "0.25",
        "--candidates", "4", "--timeout", "60", "--no-progress", "--out", str(out),
    )
    soak = json.loads((out / "soak.json").read_text())
    assert completed.returncode == (0 if soak["passed"] else 1), completed.stderr
    assert soak["requests"] == soak["ok"] == 12 and soak["errors"] == {}
    assert len(soak["samples"]) >= 8
    (ours,) = [p for p in soak["processes"] if p["process"].endswith(f"[{os.getpid()}]")]
    assert ours["present_throughout"] and ours["baseline_mib"] > 10
    assert soak["passed"] == all(p["flat"] for p in soak["processes"])
    assert_png(out / "soak.png")
    assert "resident memory" in completed.stdout

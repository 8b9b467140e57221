"""Summaries against hand-computed answers: percentiles, coordinated omission,
goodput, errors, late sends, the spread over replicas, the server's view (one
replica or a cluster's summed) and the summary.json format."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest

from loadtest.records import (
    CLIENT_REJECTED,
    RequestRecord,
    latency_histogram,
    read_records_jsonl,
    write_records_jsonl,
)
from loadtest.summary import FORMAT, RunInfo, format_summary, server_view, summarize, write_summary_json
from serving.metrics import ServiceMetrics

HDR = 1e-3  # HdrHistogram with 3 significant digits: every value within 0.1%
RUN = RunInfo(mode="open-loop", target="127.0.0.1:1", timeout_s=2.0, seed=0, arrivals="fixed", rate=10.0,
              duration_s=10.0)


def record(index: int, intended: float, sent: float | None, end: float, status: str = "OK",
           candidates: int = 4) -> RequestRecord:
    return RequestRecord(index, f"r{index}", candidates, intended, sent, end, status)


def summary_of(records, wall_s=10.0, slo_s=0.5, server=None):
    return summarize(records, wall_s=wall_s, slo_s=slo_s, run=RUN, started_at="2026-01-01T00:00:00+00:00",
                     server=server)


def test_percentiles_of_1_to_1000_ms():
    # Sent on time, answered after 1, 2, ..., 1000 ms.
    records = [record(i, i * 0.01, i * 0.01, i * 0.01 + (i + 1) / 1000) for i in range(1000)]
    summary = summary_of(records)
    for stats in (summary.latency_from_intended, summary.latency_from_sent):
        assert stats.count == 1000
        assert stats.p50 == pytest.approx(500, rel=HDR)
        assert stats.p90 == pytest.approx(900, rel=HDR)
        assert stats.p99 == pytest.approx(990, rel=HDR)
        assert stats.p99_9 == pytest.approx(999, rel=HDR)
        assert stats.max == pytest.approx(1000, rel=HDR)
    assert summary.goodput == pytest.approx(0.5)  # 1..500 ms are within a 500 ms SLO


def test_histogram_clamps_into_its_range():
    histogram = latency_histogram([0.0, -1.0, 1e6])
    assert histogram.get_total_count() == 3
    assert histogram.get_min_value() >= 1
    assert histogram.get_max_value() == pytest.approx(600e6, rel=HDR)


def stalled_run() -> list[RequestRecord]:
    """Ten requests meant for t = 0.0, 0.1, ..., 0.9 s from a caller that waits
    for each answer. The server stalls 1 s on the first and then answers each
    in 10 ms, so request k >= 1 is sent at 1.0 + 0.01 (k - 1) and ends 10 ms later."""
    records = [record(0, 0.0, 0.0, 1.0)]
    for k in range(1, 10):
        sent = 1.0 + 0.01 * (k - 1)
        records.append(record(k, 0.1 * k, sent, sent + 0.01))
    return records


def test_coordinated_omission_correction_on_a_stalled_server():
    summary = summary_of(stalled_run(), wall_s=1.09)
    # From the actual send: one 1000 ms answer and nine 10 ms ones.
    assert summary.latency_from_sent.p50 == pytest.approx(10, rel=HDR)
    assert summary.latency_from_sent.p90 == pytest.approx(10, rel=HDR)
    assert summary.latency_from_sent.max == pytest.approx(1000, rel=HDR)
    # From the intended time, request k waited 1000 - 90 k ms:
    # 1000, 910, 820, 730, 640, 550, 460, 370, 280, 190.
    assert summary.latency_from_intended.p50 == pytest.approx(550, rel=HDR)
    assert summary.latency_from_intended.p90 == pytest.approx(910, rel=HDR)
    assert summary.latency_from_intended.max == pytest.approx(1000, rel=HDR)
    # Goodput is judged from the intended time: 190, 280, 370, 460 ms are within 500 ms.
    assert summary.goodput == pytest.approx(0.4)
    # Every request but the first went out late; the worst by 900 ms (request 1).
    assert summary.late_sends == 9
    assert summary.max_send_lag_ms == pytest.approx(900)


def test_errors_goodput_and_throughput_count_every_request():
    records = [
        record(0, 0.0, 0.0, 0.1, candidates=10),
        record(1, 0.1, 0.1, 0.3, candidates=10),
        record(2, 0.2, 0.2, 0.9, candidates=10),  # OK but over the SLO
        record(3, 0.3, 0.3, 2.3, "DEADLINE_EXCEEDED", candidates=10),
        record(4, 0.4, 0.4, 0.41, "RESOURCE_EXHAUSTED", candidates=10),
        record(5, 0.5, 0.5, 0.51, "RESOURCE_EXHAUSTED", candidates=10),
        record(6, 0.6, None, 0.6, CLIENT_REJECTED, candidates=10),
    ]
    summary = summary_of(records, wall_s=2.5)
    assert (summary.total, summary.sent, summary.ok, summary.client_rejected) == (7, 6, 3, 1)
    assert summary.errors == {"CLIENT_REJECTED": 1, "DEADLINE_EXCEEDED": 1, "RESOURCE_EXHAUSTED": 2}
    assert summary.goodput == pytest.approx(2 / 7)
    assert summary.requests_per_s == pytest.approx(6 / 2.5)
    assert summary.ok_requests_per_s == pytest.approx(3 / 2.5)
    assert summary.candidates_per_s == pytest.approx(30 / 2.5)  # OK candidates only
    # Latency figures cover the OK answers only: 100, 200, 700 ms.
    assert summary.latency_from_intended.count == 3
    assert summary.latency_from_intended.max == pytest.approx(700, rel=HDR)
    assert summary.late_sends == 0


def test_late_sends_count_only_lags_over_10_ms():
    records = [record(0, 0.0, 0.009, 0.1), record(1, 1.0, 1.011, 1.1), record(2, 2.0, 2.05, 2.1)]
    summary = summary_of(records)
    assert summary.late_sends == 2
    assert summary.max_send_lag_ms == pytest.approx(50)


def test_an_empty_run_has_no_percentiles_and_no_goodput():
    summary = summary_of([])
    assert summary.goodput is None
    assert summary.latency_from_intended.p99 is None
    assert summary.requests_per_s == 0
    assert "requests    0" in format_summary(summary)


def scrape(metrics: ServiceMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_server_view_is_the_delta_over_the_run():
    metrics = ServiceMetrics(slo_seconds=0.5, model="m")
    # Before the run (the warm-up): must not count.
    metrics.batch_dispatched(100)
    metrics.queue_and_engine(5.0, 1.0)
    metrics.task_scored("job_apply", 100, prompt_tokens=10_000, cached_tokens=0)
    metrics.rejected("queue_full")
    before = scrape(metrics)
    metrics.batch_dispatched(10)
    metrics.batch_dispatched(30)
    metrics.queue_and_engine(0.010, 0.1)
    metrics.queue_and_engine(0.030, 0.1)
    metrics.task_scored("job_apply", 30, prompt_tokens=3_000, cached_tokens=600)
    metrics.task_scored("feed_engagement", 10, prompt_tokens=1_000, cached_tokens=400)
    for status in ("OK", "OK", "RESOURCE_EXHAUSTED"):
        metrics.request_started()
        metrics.request_finished(status, 0.1)
    metrics.rejected("queue_full")
    metrics.rejected("deadline")
    metrics.rejected("deadline")
    view = server_view(before, scrape(metrics), "http://x/metrics")
    assert view.batches == 2
    assert view.mean_batch_candidates == pytest.approx(20)
    assert view.mean_queue_ms == pytest.approx(20)
    assert view.cached_token_share == pytest.approx(1_000 / 4_000)
    assert view.rejections == {"deadline": 2, "queue_full": 1}
    assert view.requests == {"OK": 2, "RESOURCE_EXHAUSTED": 1}


def test_server_view_without_traffic_has_no_means():
    text = scrape(ServiceMetrics(slo_seconds=0.5, model="m"))
    view = server_view(text, text)
    assert (view.batches, view.mean_batch_candidates, view.mean_queue_ms, view.cached_token_share) == (
        0, None, None, None)
    assert view.rejections == {}


def test_summary_json_format(tmp_path):
    metrics = ServiceMetrics(slo_seconds=0.5, model="m")
    before = scrape(metrics)
    metrics.batch_dispatched(8)
    summary = summary_of(stalled_run(), wall_s=1.09, server=server_view(before, scrape(metrics), "u"))
    write_summary_json(summary, tmp_path / "summary.json")
    document = json.loads((tmp_path / "summary.json").read_text())
    assert document["format"] == FORMAT
    assert set(document) == {"format", "run", "started_at", "wall_s", "slo_ms", "requests", "throughput",
                             "latency_ms", "goodput", "errors", "error_latency_ms", "late_sends", "server",
                             "replicas"}
    assert document["requests"] == {"total": 10, "sent": 10, "ok": 10, "client_rejected": 0}
    assert set(document["throughput"]) == {"requests_per_s", "ok_requests_per_s", "candidates_per_s",
                                           "ok_candidates"}
    assert set(document["latency_ms"]) == {"from_intended", "from_sent"}
    assert set(document["latency_ms"]["from_intended"]) == {"count", "p50", "p90", "p99", "p99_9", "max"}
    assert document["latency_ms"]["from_intended"]["p50"] == pytest.approx(550, rel=HDR)
    assert document["late_sends"] == {"threshold_ms": 10.0, "count": 9, "max_lag_ms": pytest.approx(900)}
    assert document["slo_ms"] == 500
    assert document["run"]["mode"] == "open-loop" and document["run"]["rate"] == 10.0
    assert set(document["server"]) == {"metrics_url", "requests", "batches", "mean_batch_candidates",
                                       "mean_queue_ms", "cached_token_share", "rejections", "metrics_urls"}
    assert document["server"]["mean_batch_candidates"] == 8
    assert document["server"]["metrics_urls"] == ["u"] and document["replicas"] == {}


def test_a_cluster_view_sums_every_replica_page():
    replicas = [ServiceMetrics(slo_seconds=0.5, model="m") for _ in range(2)]
    before = [scrape(metrics) for metrics in replicas]
    replicas[0].batch_dispatched(10)
    replicas[1].batch_dispatched(30)
    replicas[0].task_scored("job_apply", 10, prompt_tokens=1_000, cached_tokens=900)
    replicas[1].task_scored("job_apply", 30, prompt_tokens=3_000, cached_tokens=100)
    view = server_view(before, [scrape(metrics) for metrics in replicas], ["http://a/metrics", "http://b/metrics"])
    assert view.batches == 2 and view.mean_batch_candidates == pytest.approx(20)
    assert view.cached_token_share == pytest.approx(1_000 / 4_000)
    assert view.metrics_url == "http://a/metrics" and view.metrics_urls == ("http://a/metrics", "http://b/metrics")
    assert "(2 /metrics pages summed)" in format_summary(summary_of(stalled_run(), server=view))


def test_the_spread_over_replicas_counts_every_answer_that_names_one():
    records = [RequestRecord(i, f"r{i}", 4, 0.0, 0.0, 0.1, "OK" if i < 5 else "UNAVAILABLE",
                             replica="b:2" if i % 4 == 0 else "a:1") for i in range(6)]
    records.append(RequestRecord(6, "r6", 4, 0.0, None, 0.0, CLIENT_REJECTED))
    summary = summary_of(records)
    assert summary.replicas == {"a:1": 4, "b:2": 2}
    assert list(summary.replicas) == ["a:1", "b:2"]
    assert "replicas    2 answered: a:1 66.7% (4), b:2 33.3% (2)" in format_summary(summary)
    unnamed = format_summary(summary_of(stalled_run())).splitlines()
    assert not any(line.startswith("replicas") for line in unnamed)


def test_requests_jsonl_round_trip(tmp_path):
    records = [*stalled_run(), record(10, 1.0, None, 1.0, CLIENT_REJECTED)]
    assert write_records_jsonl(records, tmp_path / "requests.jsonl") == 11
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 11
    assert read_records_jsonl(tmp_path / "requests.jsonl") == records


def test_the_human_table_names_the_figures():
    table = format_summary(summary_of(stalled_run(), wall_s=1.09))
    assert "open-loop fixed at 10/s" in table
    assert "from intended" in table and "from sent" in table
    assert "goodput     40.0%" in table
    assert "late sends  9" in table


def test_each_kind_of_error_has_its_latency():
    records = [record(0, 0.0, 0.0, 0.2), record(1, 0.1, 0.1, 0.102, "RESOURCE_EXHAUSTED"),
               record(2, 0.2, 0.2, 0.204, "RESOURCE_EXHAUSTED"),
               record(3, 0.3, 0.3, 2.3, "DEADLINE_EXCEEDED"), record(4, 0.4, None, 0.4, CLIENT_REJECTED)]
    summary = summary_of(records)
    assert set(summary.error_latency) == {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
    refused = summary.error_latency["RESOURCE_EXHAUSTED"]
    assert refused.count == 2 and refused.max == pytest.approx(4, rel=HDR)
    assert summary.error_latency["DEADLINE_EXCEEDED"].p50 == pytest.approx(2000, rel=HDR)
    assert summary.to_json()["error_latency_ms"]["RESOURCE_EXHAUSTED"]["count"] == 2

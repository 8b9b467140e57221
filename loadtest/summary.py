"""The answer of one run: throughput, latency against the SLO, errors, and the server's view.

From the per-request records (loadtest.records), the run's wall time and the
SLO, `summarize` computes what an operator sizing a replica asks for:

- throughput: requests/s (sent), OK requests/s and OK candidates/s, over the
  run's wall time (from its start to its last answer; an open-loop run
  lasts at least the window its schedule offered load over);
- latency (OK answers only) at p50/p90/p99/p99.9/max, measured both from the
  intended send time (coordinated-omission corrected: the one to judge the
  SLO on) and from the actual send time;
- goodput: the share of all requests, client rejections included, answered
  OK within the SLO measured from the intended time;
- errors by status code name (CLIENT_REJECTED: refused by the client's cap
  on outstanding requests), and how long each kind took to come back (an
  overloaded server should refuse in milliseconds, not at the deadline);
- late sends: requests sent more than 10 ms after their intended time, which
  says the client itself could not keep the schedule;
- replicas: behind `brew cluster`, how many answers each replica gave (the
  x-brew-replica header), errors included.

The server's view comes from its /metrics page scraped before and after the
run (counter deltas, so the warm-up and earlier runs do not count, but other
traffic to the same server during the run does): the mean engine batch in
candidates, the mean queue time, the share of prompt tokens served from the
prefix cache and the server's rejections by reason. Given several /metrics
pages (a cluster's replicas), their counters are summed: the cluster's view.

summary.json (format "brew.loadtest.summary/1"; keys are only ever added):

    format        "brew.loadtest.summary/1"
    run           what was run: mode (open-loop | closed-loop), target, arrivals,
                  rate, burstiness, concurrency, duration_s, max_requests,
                  timeout_s, seed, workload {...}
    started_at    UTC start of the run, ISO 8601
    wall_s        the run's length in seconds (throughput is per this)
    slo_ms        the latency SLO
    requests      {total, sent, ok, client_rejected}
    throughput    {requests_per_s, ok_requests_per_s, candidates_per_s, ok_candidates}
    latency_ms    {from_intended, from_sent}: each {count, p50, p90, p99, p99_9, max}
                  (null when no request was answered OK)
    goodput       share of requests OK within the SLO (null for an empty run)
    errors        {status code name: count}, OK excluded
    error_latency_ms  {status code name: {count, p50, p90, p99, p99_9, max}}, from
                  intended send, CLIENT_REJECTED excluded
    late_sends    {threshold_ms, count, max_lag_ms}
    server        null, or {metrics_url, requests {status: n}, batches,
                  mean_batch_candidates, mean_queue_ms, cached_token_share,
                  rejections {reason: n}, metrics_urls [all scraped]} (means and
                  shares null without data; metrics_url is the first)
    replicas      {replica name: answers}, empty when no server named itself
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram
from prometheus_client.parser import text_string_to_metric_families

from loadtest.records import CLIENT_REJECTED, RequestRecord, latency_histogram, ok_latency_histograms

FORMAT = "brew.loadtest.summary/1"
LATE_SEND_SECONDS = 0.010
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


@dataclass(frozen=True)
class RunInfo:
    """What was run, echoed into the summary so a file explains itself."""

    mode: str  # "open-loop" or "closed-loop"
    target: str
    timeout_s: float
    seed: int
    member_header: bool = True  # x-brew-member sent (Envoy's affinity key)
    protocol: str = "grpc"  # grpc (RankingService) or http (POST /v1/brew/score)
    arrivals: str | None = None
    rate: float | None = None
    burstiness: float | None = None
    concurrency: int | None = None
    duration_s: float | None = None
    max_requests: int | None = None
    workload: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles in milliseconds; None when nothing was recorded."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    p99_9: float | None
    max: float | None

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> LatencyStats:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, None, None, None, None, None)
        values = {name: histogram.get_value_at_percentile(p) / 1000.0 for name, p in PERCENTILES}
        return cls(count=count, max=histogram.get_max_value() / 1000.0, **values)


@dataclass(frozen=True)
class ServerView:
    """Deltas of the server's own metrics over the run."""

    metrics_url: str
    requests: Mapping[str, float]  # by gRPC status
    batches: float
    mean_batch_candidates: float | None
    mean_queue_ms: float | None
    cached_token_share: float | None
    rejections: Mapping[str, float]  # by reason
    metrics_urls: tuple[str, ...] = ()  # every page summed (a cluster's replicas)


@dataclass(frozen=True)
class Summary:
    run: RunInfo
    started_at: str
    wall_s: float
    slo_ms: float
    total: int
    sent: int
    ok: int
    client_rejected: int
    ok_candidates: int
    latency_from_intended: LatencyStats
    latency_from_sent: LatencyStats
    goodput: float | None
    errors: Mapping[str, int]
    late_sends: int
    max_send_lag_ms: float
    server: ServerView | None
    replicas: Mapping[str, int] = field(default_factory=dict)  # answers per replica
    error_latency: Mapping[str, LatencyStats] = field(default_factory=dict)  # by status, from intended send

    @property
    def requests_per_s(self) -> float:
        return _per_second(self.sent, self.wall_s)

    @property
    def ok_requests_per_s(self) -> float:
        return _per_second(self.ok, self.wall_s)

    @property
    def candidates_per_s(self) -> float:
        return _per_second(self.ok_candidates, self.wall_s)

    @property
    def p99_ms(self) -> float | None:
        """The p99 the SLO is judged on: from the intended send time."""
        return self.latency_from_intended.p99

    def to_json(self) -> dict[str, object]:
        """The summary.json document (see the module docstring)."""
        return {
            "format": FORMAT,
            "run": {**asdict(self.run), "workload": dict(self.run.workload)},
            "started_at": self.started_at,
            "wall_s": self.wall_s,
            "slo_ms": self.slo_ms,
            "requests": {"total": self.total, "sent": self.sent, "ok": self.ok,
                         "client_rejected": self.client_rejected},
            "throughput": {"requests_per_s": self.requests_per_s, "ok_requests_per_s": self.ok_requests_per_s,
                           "candidates_per_s": self.candidates_per_s, "ok_candidates": self.ok_candidates},
            "latency_ms": {"from_intended": asdict(self.latency_from_intended),
                           "from_sent": asdict(self.latency_from_sent)},
            "goodput": self.goodput,
            "errors": dict(self.errors),
            "error_latency_ms": {status: asdict(stats) for status, stats in self.error_latency.items()},
            "late_sends": {"threshold_ms": LATE_SEND_SECONDS * 1000.0, "count": self.late_sends,
                           "max_lag_ms": self.max_send_lag_ms},
            "server": None if self.server is None else {
                **asdict(self.server), "requests": dict(self.server.requests),
                "rejections": dict(self.server.rejections), "metrics_urls": list(self.server.metrics_urls),
            },
            "replicas": dict(self.replicas),
        }


def summarize(
    records: Sequence[RequestRecord],
    *,
    wall_s: float,
    slo_s: float,
    run: RunInfo,
    started_at: str,
    server: ServerView | None = None,
) -> Summary:
    from_intended, from_sent = ok_latency_histograms(records)
    ok = [r for r in records if r.ok]
    lags = [lag for lag in (r.send_lag for r in records) if lag is not None]
    within_slo = sum(1 for r in ok if r.latency_from_intended <= slo_s)
    return Summary(
        run=run,
        started_at=started_at,
        wall_s=wall_s,
        slo_ms=slo_s * 1000.0,
        total=len(records),
        sent=sum(1 for r in records if r.sent is not None),
        ok=len(ok),
        client_rejected=sum(1 for r in records if r.status == CLIENT_REJECTED),
        ok_candidates=sum(r.candidates for r in ok),
        latency_from_intended=LatencyStats.from_histogram(from_intended),
        latency_from_sent=LatencyStats.from_histogram(from_sent),
        goodput=within_slo / len(records) if records else None,
        errors=dict(sorted(Counter(r.status for r in records if not r.ok).items())),
        error_latency=_error_latency(records),
        late_sends=sum(1 for lag in lags if lag > LATE_SEND_SECONDS),
        max_send_lag_ms=max(lags, default=0.0) * 1000.0,
        server=server,
        replicas=dict(sorted(Counter(r.replica for r in records if r.replica is not None).items())),
    )


def _error_latency(records: Sequence[RequestRecord]) -> dict[str, LatencyStats]:
    """Latency from intended send of each kind of error the server (or the deadline) gave."""
    statuses = sorted({r.status for r in records if not r.ok and r.status != CLIENT_REJECTED})
    return {
        status: LatencyStats.from_histogram(
            latency_histogram(r.latency_from_intended for r in records if r.status == status))
        for status in statuses
    }


def _per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# --- the server's view ------------------------------------------------------

def scrape_metrics(url: str, timeout: float = 10.0) -> str:
    """The server's /metrics page as text (raises OSError if unreachable)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read().decode("utf-8")


# (sample name, sorted label items) -> value
Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(*texts: str) -> Samples:
    """The samples of one /metrics page, or of several summed (a cluster's replicas)."""
    summed: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                summed[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return dict(summed)


def _delta_by_label(before: Samples, after: Samples, name: str, label: str) -> dict[str, float]:
    """The increase of `name` over the run, summed per value of `label`."""
    deltas: Counter[str] = Counter()
    for (sample, labels), value in after.items():
        if sample == name:
            deltas[dict(labels).get(label, "")] += value - before.get((sample, labels), 0.0)
    return {key: value for key, value in sorted(deltas.items()) if value}


def _delta(before: Samples, after: Samples, name: str) -> float:
    return sum(value - before.get(key, 0.0) for key, value in after.items() if key[0] == name)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def server_view(before_text: str | Sequence[str], after_text: str | Sequence[str],
                metrics_url: str | Sequence[str] = "") -> ServerView:
    """The server's metrics over the run: the after scrape minus the before one.
    Several pages (one per replica, in the same order before and after) are summed."""
    befores = [before_text] if isinstance(before_text, str) else list(before_text)
    afters = [after_text] if isinstance(after_text, str) else list(after_text)
    urls = (metrics_url,) if isinstance(metrics_url, str) else tuple(metrics_url)
    before, after = parse_samples(*befores), parse_samples(*afters)
    batches = _delta(before, after, "brew_batch_candidates_count")
    queued = _delta(before, after, "brew_queue_seconds_count")
    mean_queue = _ratio(_delta(before, after, "brew_queue_seconds_sum"), queued)
    return ServerView(
        metrics_url=urls[0] if urls else "",
        metrics_urls=urls,
        requests=_delta_by_label(before, after, "brew_requests_total", "status"),
        batches=batches,
        mean_batch_candidates=_ratio(_delta(before, after, "brew_batch_candidates_sum"), batches),
        mean_queue_ms=None if mean_queue is None else mean_queue * 1000.0,
        cached_token_share=_ratio(_delta(before, after, "brew_cached_prompt_tokens_total"),
                                  _delta(before, after, "brew_prompt_tokens_total")),
        rejections=_delta_by_label(before, after, "brew_rejections_total", "reason"),
    )


# --- output -------------------------------------------------------------------

def write_summary_json(summary: Summary, path: Path) -> None:
    path.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def describe_run(run: RunInfo) -> str:
    if run.mode == "closed-loop":
        load = f"closed-loop, {run.concurrency} callers"
    else:
        shape = f" (burstiness {run.burstiness:g})" if run.arrivals == "gamma" else ""
        load = f"open-loop {run.arrivals}{shape} at {run.rate:g}/s"
    bounds = [f"{run.duration_s:g} s" if run.duration_s else "", f"<= {run.max_requests} requests"
              if run.max_requests else ""]
    over = " over HTTP" if run.protocol == "http" else ""
    return f"{load}, {', '.join(b for b in bounds if b)} against {run.target}{over}"


def format_summary(summary: Summary) -> str:
    """The human table printed after a run."""
    lines = [
        f"brew loadtest: {describe_run(summary.run)} (SLO {summary.slo_ms:g} ms)",
        f"requests    {summary.total} in {summary.wall_s:.1f} s: {summary.sent} sent, {summary.ok} OK, "
        f"{summary.client_rejected} refused by the client (too many outstanding)",
        f"throughput  {summary.requests_per_s:.1f} requests/s, "
        f"{summary.ok_requests_per_s:.1f} OK requests/s, {summary.candidates_per_s:.1f} candidates/s (OK)",
        f"{'latency ms':<16}" + "".join(f"{h:>9}" for h in ("p50", "p90", "p99", "p99.9", "max"))
        + "   (OK answers)",
    ]
    rows = (("from intended", summary.latency_from_intended), ("from sent", summary.latency_from_sent))
    for name, stats in rows:
        values = (stats.p50, stats.p90, stats.p99, stats.p99_9, stats.max)
        lines.append(f"  {name:<14}" + "".join(f"{_ms(v):>9}" for v in values))
    if 0 < summary.ok < 100:
        lines.append(f"  (only {summary.ok} OK answers: p99 and p99.9 are their maximum; "
                     "run longer for tails)")
    errors = ", ".join(f"{code} {count}" for code, count in summary.errors.items()) or "none"
    lines += [
        f"goodput     {_share(summary.goodput)} of requests OK within the SLO (from intended send)",
        f"errors      {errors}",
        f"late sends  {summary.late_sends} over {LATE_SEND_SECONDS * 1000:g} ms late, "
        f"max lag {summary.max_send_lag_ms:.1f} ms",
    ]
    if summary.replicas:
        answers = sum(summary.replicas.values())
        spread = ", ".join(f"{name} {count / answers:.1%} ({count})" for name, count in summary.replicas.items())
        lines.append(f"replicas    {len(summary.replicas)} answered: {spread}")
    server = summary.server
    if server is not None:
        rejections = ", ".join(f"{reason} {count:g}" for reason, count in server.rejections.items()) or "none"
        pages = f" ({len(server.metrics_urls)} /metrics pages summed)" if len(server.metrics_urls) > 1 else ""
        lines.append(
            f"server      {server.batches:g} batches{pages}, "
            f"mean batch {_ms(server.mean_batch_candidates)} candidates, "
            f"mean queue {_ms(server.mean_queue_ms)} ms, "
            f"cached prompt tokens {_share(server.cached_token_share)}, rejections: {rejections}"
        )
    return "\n".join(lines)

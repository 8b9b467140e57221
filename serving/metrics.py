"""The service's Prometheus metrics, on their own registry and HTTP port.

Every metric is named `brew_*` and labelled only by bounded values: task names
the server has loaded (anything else is "unknown"), gRPC status code names and
rejection reasons from the status table. Never member or item ids.

Throughput is first-class: the `*_total` counters (requests, candidates,
prompt tokens, cached prompt tokens) give rates with PromQL's `rate()`, and
`Totals` keeps the same numbers as plain integers for the periodic log line
(serving.stats_log), so that line never reads Prometheus internals.

Latency histograms (queue, engine, end-to-end) all carry a bucket at the
configured SLO, so `le="<slo>"` gives the share of requests within it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from brew.engines.multi_item_rule import GroupPath

if TYPE_CHECKING:
    from brew.engines.packing import PackingStats
    from serving.dispatcher import Dispatcher

# Seconds: fine below 100 ms where a ranking SLO usually sits, coarse above.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
)
BATCH_CANDIDATE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FORWARD_TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
SHARE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def latency_buckets(slo_seconds: float) -> tuple[float, ...]:
    """The standard buckets plus one exactly at the SLO."""
    return tuple(sorted(set(LATENCY_BUCKETS) | {slo_seconds}))


@dataclass
class Totals:
    """Running totals since start, for the throughput log line."""

    requests: int = 0  # finished
    inflight_requests: int = 0
    candidates: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    batches: int = 0
    batch_candidates: int = 0


class ServiceMetrics:
    """All of the service's own metrics; the servicer and batcher report here."""

    def __init__(self, slo_seconds: float, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.totals = Totals()
        self._lock = threading.Lock()
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        buckets = latency_buckets(slo_seconds)
        r = self.registry
        self.info = Gauge("brew_model_info", "The model being served (value 1).", ["model"], registry=r)
        self.info.labels(model=model).set(1)
        self.slo = Gauge("brew_slo_seconds", "The configured latency SLO (a histogram bucket sits here).", registry=r)
        self.slo.set(slo_seconds)
        self.requests = Counter("brew_requests", "ScoreCandidates calls finished, by gRPC status.",
                                ["status"], registry=r)
        self.task_requests = Counter("brew_task_requests", "Tasks scored or failed, by task and gRPC status.",
                                     ["task", "status"], registry=r)
        self.candidates = Counter("brew_candidates", "Candidates scored or failed, by task and gRPC status.",
                                  ["task", "status"], registry=r)
        self.rejections = Counter("brew_rejections", "Requests refused or failed, by reason.", ["reason"],
                                  registry=r)
        self.prompt_tokens = Counter("brew_prompt_tokens", "Prompt tokens scored, by task.", ["task"], registry=r)
        self.cached_tokens = Counter("brew_cached_prompt_tokens",
                                     "Prompt tokens served from the prefix cache, by task.", ["task"], registry=r)
        self.queue_seconds = Histogram("brew_queue_seconds", "Time a request waited for its engine batch.",
                                       buckets=buckets, registry=r)
        self.engine_seconds = Histogram("brew_engine_seconds", "Engine time of a request's batch.",
                                        buckets=buckets, registry=r)
        self.request_seconds = Histogram("brew_request_seconds",
                                         "End-to-end ScoreCandidates time in the server, by gRPC status.",
                                         ["status"], buckets=buckets, registry=r)
        self.batch_candidates = Histogram("brew_batch_candidates", "Candidates per engine batch.",
                                          buckets=BATCH_CANDIDATE_BUCKETS, registry=r)
        self.inflight = Gauge("brew_inflight_requests", "ScoreCandidates calls being handled.", registry=r)
        self.queued_candidates = Gauge("brew_queued_candidates", "Candidates waiting for an engine batch.",
                                       registry=r)
        self.admitted = Counter("brew_admitted_requests", "Requests admitted to the queue.", registry=r)
        self.admission_limit = Gauge("brew_admission_limit_candidates",
                                     "The adaptive queue limit, in candidates.", registry=r)
        self.expected_wait = Gauge("brew_expected_wait_seconds",
                                   "Work queued and in the engine, in seconds at the recent throughput.",
                                   registry=r)
        self.throughput = Gauge("brew_throughput_candidates_per_second",
                                "The engine's recent throughput as admission estimates it.", registry=r)
        self.engine_restarts = Counter("brew_engine_restarts", "Engine restarts, by outcome.", ["outcome"],
                                       registry=r)
        self.task_info = Gauge("brew_task_info", "The tasks being served (value 1), with their template versions.",
                               ["task", "version"], registry=r)
        self._model = model
        self.version_tasks = Counter(
            "brew_version_tasks", "Tasks scored OK, by model and template version: during a rollout, the share "
            "each version serves.", ["model", "task", "version"], registry=r)
        self.groups = Counter(
            "brew_groups", "Groups (one member and task) scored, by path: packed (multi-item) or per_candidate.",
            ["path"], registry=r)
        for path in GroupPath:
            self.groups.labels(path=path.value)  # both series from the start, at 0
        self.forward_tokens = Histogram(
            "brew_forward_tokens", "Real (not pad) tokens per packed forward pass (multi-item scoring).",
            buckets=FORWARD_TOKEN_BUCKETS, registry=r)
        self.forward_slots = Counter(
            "brew_forward_token_slots", "Token slots of packed forward passes, by kind: real or pad.",
            ["kind"], registry=r)
        self.forward_masked_share = Histogram(
            "brew_forward_masked_share",
            "Share of a packed pass's causal attention the multi-item mask blocks (dense work spent on nothing).",
            buckets=SHARE_BUCKETS, registry=r)
        self.context_cache = Counter(
            "brew_context_cache_events", "Rendered member contexts: hit, miss, eviction (repeat members skip rendering).",
            ["event"], registry=r)
        self.prompt_reloads = Counter("brew_prompt_reloads", "Prompt reloads (SIGHUP or ReloadPrompts), by outcome.",
                                      ["outcome"], registry=r)

    # --- reported by the servicer -----------------------------------------

    def request_started(self) -> None:
        self.inflight.inc()
        with self._lock:
            self.totals.inflight_requests += 1

    def request_finished(self, status: str, seconds: float) -> None:
        self.inflight.dec()
        self.requests.labels(status=status).inc()
        self.request_seconds.labels(status=status).observe(seconds)
        with self._lock:
            self.totals.requests += 1
            self.totals.inflight_requests -= 1

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason=reason).inc()

    def task_failed(self, task: str, candidates: int, status: str) -> None:
        self.task_requests.labels(task=task, status=status).inc()
        self.candidates.labels(task=task, status=status).inc(candidates)

    def task_scored(self, task: str, candidates: int, prompt_tokens: int, cached_tokens: int,
                    version: str | None = None) -> None:
        """A task scored OK; `version`: the template version that rendered it (None: no template)."""
        self.task_requests.labels(task=task, status="OK").inc()
        if version is not None:
            self.version_tasks.labels(model=self._model, task=task, version=version).inc()
        self.candidates.labels(task=task, status="OK").inc(candidates)
        self.prompt_tokens.labels(task=task).inc(prompt_tokens)
        self.cached_tokens.labels(task=task).inc(cached_tokens)
        with self._lock:
            self.totals.candidates += candidates
            self.totals.prompt_tokens += prompt_tokens
            self.totals.cached_tokens += cached_tokens

    def queue_and_engine(self, queue_seconds: float, engine_seconds: float) -> None:
        self.queue_seconds.observe(queue_seconds)
        self.engine_seconds.observe(engine_seconds)

    # --- reported by the server ---------------------------------------------

    def tasks_loaded(self, versions: dict[str, str]) -> None:
        """The task set now serving: `brew_task_info` names exactly these, so
        a score can be traced to the template version that produced it."""
        self.task_info.clear()
        for task, version in versions.items():
            self.task_info.labels(task=task, version=version).set(1)

    def context_cache_event(self, event: str) -> None:
        self.context_cache.labels(event=event).inc()

    def reload_finished(self, ok: bool) -> None:
        self.prompt_reloads.labels(outcome="ok" if ok else "failed").inc()

    def engine_restarted(self, ok: bool) -> None:
        self.engine_restarts.labels(outcome="ok" if ok else "failed").inc()

    # --- reported by the engine (multi-item scoring) -----------------------

    def group_scored(self, path: GroupPath) -> None:
        """One group sent down `path` (brew.engines.multi_item_rule)."""
        self.groups.labels(path=path.value).inc()

    def forward_packed(self, stats: PackingStats) -> None:
        """One packed forward pass: its real tokens, its pads, its masked share."""
        self.forward_tokens.observe(stats.real_tokens)
        self.forward_slots.labels(kind="real").inc(stats.real_tokens)
        self.forward_slots.labels(kind="pad").inc(stats.pad_tokens)
        self.forward_masked_share.observe(stats.masked_share)

    # --- reported by the dispatcher ---------------------------------------

    def watch_dispatcher(self, current: Callable[[], Dispatcher | None]) -> None:
        """Read the live gauges from whichever dispatcher `current()` returns
        (a restarted engine comes with a new one)."""

        def reading(read: Callable[[Dispatcher], float]) -> Callable[[], float]:
            return lambda: read(dispatcher) if (dispatcher := current()) is not None else 0.0

        self.queued_candidates.set_function(reading(lambda d: d.stats.queued_candidates))
        self.admission_limit.set_function(reading(lambda d: d.admission.limit))
        self.expected_wait.set_function(reading(lambda d: d.expected_wait_seconds()))
        self.throughput.set_function(reading(lambda d: d.admission.throughput or 0.0))

    def request_admitted(self, candidates: int) -> None:
        self.admitted.inc()

    def batch_dispatched(self, candidates: int) -> None:
        self.batch_candidates.observe(candidates)
        with self._lock:
            self.totals.batches += 1
            self.totals.batch_candidates += candidates

    def snapshot(self) -> Totals:
        with self._lock:
            return Totals(**vars(self.totals))

    # --- exposition ---------------------------------------------------------

    def start_http_server(self, port: int, host: str) -> int:
        """Serve /metrics on a background thread; returns the bound port."""
        self._http = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http[0].server_port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None

"""One record per request, and latency histograms built from them.

A record keeps three times, in seconds from the start of the run (one
monotonic clock): when the request was meant to be sent (its place in the
schedule), when it was actually sent, and when its answer or error came back.
From them come two latencies:

- from intended (end - intended): what a user who arrived on schedule waited.
  When the server stalls, or the client falls behind, requests go out late;
  timing them from the actual send would hide exactly that wait (coordinated
  omission), so this is the latency the SLO is judged on.
- from sent (end - sent): the service time the wire saw, for diagnosis.

In a closed-loop run the intended time is the send time and both are equal.

Behind `brew cluster` a record also names the replica that answered (the
x-brew-replica header; None when the server names none).

A request refused by the client because too many were outstanding is
recorded with status CLIENT_REJECTED and no send time: it counts against
goodput but is never silently dropped.

Latencies go into HdrHistograms in microseconds (1 us .. 10 min, 3
significant digits: every percentile within 0.1% of the true value).
requests.jsonl holds the records themselves, one JSON object per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram

CLIENT_REJECTED = "CLIENT_REJECTED"  # not a gRPC code: refused before sending
OK = "OK"

LOWEST_MICROS = 1
HIGHEST_MICROS = 600_000_000  # 10 minutes
SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class RequestRecord:
    """One request of a run; times in seconds from the start of the run."""

    index: int  # position in the run's request stream
    request_id: str
    candidates: int
    intended: float
    sent: float | None  # None: never sent (CLIENT_REJECTED)
    end: float
    status: str  # gRPC status code name, or CLIENT_REJECTED
    replica: str | None = None  # the replica that answered (x-brew-replica)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def latency_from_intended(self) -> float:
        return self.end - self.intended

    @property
    def latency_from_sent(self) -> float | None:
        return None if self.sent is None else self.end - self.sent

    @property
    def send_lag(self) -> float | None:
        """How late the request went out against its schedule."""
        return None if self.sent is None else self.sent - self.intended


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, SIGNIFICANT_DIGITS)


def to_micros(seconds: float) -> int:
    """Seconds as whole microseconds, clamped into the histogram's range."""
    return min(HIGHEST_MICROS, max(LOWEST_MICROS, round(seconds * 1e6)))


def latency_histogram(latencies_seconds: Iterable[float]) -> HdrHistogram:
    histogram = new_histogram()
    for seconds in latencies_seconds:
        histogram.record_value(to_micros(seconds))
    return histogram


def ok_latency_histograms(records: Iterable[RequestRecord]) -> tuple[HdrHistogram, HdrHistogram]:
    """(from intended, from sent) histograms of the requests answered OK.

    Failed requests are left out of the latency figures (a fast error is not
    a fast answer); they count in the errors and against goodput instead.
    """
    ok = [record for record in records if record.ok]
    return (
        latency_histogram(r.latency_from_intended for r in ok),
        latency_histogram(r.latency_from_sent for r in ok if r.latency_from_sent is not None),
    )


def write_records_jsonl(records: Iterable[RequestRecord], path: Path) -> int:
    """requests.jsonl: one record per line, the dataclass fields as keys."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
            written += 1
    return written


def read_records_jsonl(path: Path) -> list[RequestRecord]:
    with path.open(encoding="utf-8") as lines:
        return [RequestRecord(**json.loads(line)) for line in lines if line.strip()]

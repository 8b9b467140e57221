"""The server's lifecycle: one state machine that says whether it serves.

    loading ──> serving ──> failed ──> restarting ──> serving
       │           │           │            │
       └───────────┴───────────┴────────────┴──> draining (final)

Only `serving` takes calls. The service asks `require_serving()` at the door
(an error naming why not, for the caller); gRPC health and the metrics
subscribe and follow every change, so readiness is published from one place.
`failed` says why (the engine's error); `restarting` is the engine
supervisor's (serving.supervisor) and keeps the failure in its reason;
`draining` is final (SIGTERM).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

from serving.errors import NotReadyError

log = logging.getLogger(__name__)


class Phase(StrEnum):
    LOADING = "loading"
    SERVING = "serving"
    FAILED = "failed"
    RESTARTING = "restarting"
    DRAINING = "draining"


# Which phase may follow which; draining is reachable from anywhere, and final.
_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.LOADING: frozenset({Phase.SERVING, Phase.FAILED, Phase.DRAINING}),
    Phase.SERVING: frozenset({Phase.FAILED, Phase.DRAINING}),
    Phase.FAILED: frozenset({Phase.RESTARTING, Phase.DRAINING}),
    Phase.RESTARTING: frozenset({Phase.SERVING, Phase.FAILED, Phase.DRAINING}),
    Phase.DRAINING: frozenset(),
}

_REASONS = {
    Phase.LOADING: "model is loading",
    Phase.SERVING: "serving",
    Phase.RESTARTING: "engine is restarting",
    Phase.DRAINING: "server is shutting down",
}

Listener = Callable[[Phase], None]


class Lifecycle:
    """The current phase, the reason behind it, and who listens."""

    def __init__(self) -> None:
        self._phase = Phase.LOADING
        self._reason = _REASONS[Phase.LOADING]
        self._listeners: list[Listener] = []

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def serving(self) -> bool:
        return self._phase is Phase.SERVING

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(phase)` now and on every change."""
        self._listeners.append(listener)
        listener(self._phase)

    def require_serving(self) -> None:
        """NotReadyError naming the phase's reason unless serving."""
        if self._phase is not Phase.SERVING:
            raise NotReadyError(f"server not ready: {self._reason}; retry shortly")

    def to_serving(self) -> None:
        self._move(Phase.SERVING, _REASONS[Phase.SERVING])

    def to_failed(self, error: BaseException | str) -> None:
        self._move(Phase.FAILED, f"engine failed: {error}")

    def to_restarting(self) -> None:
        """The reason keeps the failure behind the restart, for callers and logs."""
        cause = f" after: {self._reason}" if self._phase is Phase.FAILED else ""
        self._move(Phase.RESTARTING, _REASONS[Phase.RESTARTING] + cause)

    def to_draining(self) -> None:
        self._move(Phase.DRAINING, _REASONS[Phase.DRAINING])

    def _move(self, phase: Phase, reason: str) -> None:
        if phase is self._phase:
            return
        if phase not in _NEXT[self._phase]:
            # Late news (e.g. a failure seen while draining) never reopens a
            # server that is going away: keep the phase, log the attempt.
            log.info("lifecycle: %s -> %s ignored (%s)", self._phase, phase, reason)
            return
        log.info("lifecycle: %s -> %s (%s)", self._phase, phase, reason)
        self._phase, self._reason = phase, reason
        for listener in self._listeners:
            listener(phase)

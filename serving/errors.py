"""The serving layer's errors, free of any transport.

Each says what happened and what the caller can do, and carries its
`reason`: the label of `brew_rejections_total`. A transport maps them to its
own codes (serving.status for gRPC); the service raises them without knowing
which transport asked. Errors of the scoring core (bad input, a broken task)
live in brew.errors and carry their reasons too.
"""

from __future__ import annotations

from brew.errors import BrewError, InvalidRequestError


class LimitExceededError(InvalidRequestError):
    """A request is over one of the server's per-request limits."""


class QueueFullError(BrewError):
    """The queue cannot admit the request now (retry after a backoff)."""

    reason = "queue_full"


class OverloadedError(QueueFullError):
    """The work already queued would keep the request past its deadline:
    refused at the door (retry after a backoff, or on another replica)."""

    reason = "overloaded"


class DeadlineExceededError(BrewError):
    """The request's deadline passed, or cannot be met."""

    reason = "deadline"


class ShedError(DeadlineExceededError):
    """Dropped from the queue at dispatch: its deadline would pass before
    its batch finished, so no engine work was spent on it."""

    reason = "shed"


class NotReadyError(BrewError):
    """The model is not loaded and warmed up yet, or the engine failed and
    is not serving (retry shortly, or on another replica)."""

    reason = "not_ready"


class ShuttingDownError(BrewError):
    """The server is draining and admits no new work (retry on another replica)."""

    reason = "shutting_down"


class EngineFailedError(BrewError):
    """The engine failed while scoring (nothing was scored)."""

    reason = "engine_failed"


class PromptReloadError(BrewError):
    """The new prompts failed their checks; the old ones are still serving."""

    reason = "reload_failed"


def reason_of(error: BaseException) -> str:
    """The rejection reason of an error: its class's `reason`, else "internal"."""
    return getattr(error, "reason", "internal") if isinstance(error, BrewError) else "internal"


class ListenError(BrewError):
    """The server cannot listen on an address it was given; the message
    names the address and the flag that changes it."""

    reason = "listen"


class PortInUseError(ListenError):
    """Another process holds a port the server was given."""

    def __init__(self, what: str, host: str, port: int, flag: str) -> None:
        super().__init__(f"cannot listen on {host}:{port} for {what}: the port is taken by another process; "
                         f"stop it or pick another port with {flag} (0 picks a free one)")

"""Errors of the core, each one a precise answer to the caller.

The gRPC layer maps them to status codes by class (see serving), so the
message must say what is wrong and how to fix it: it reaches the caller as is.
"""

from __future__ import annotations


class BrewError(Exception):
    """Base class of every error Brew raises on purpose. `reason` is the
    error's metric label (`brew_rejections_total{reason}`)."""

    reason = "internal"


class InvalidRequestError(BrewError):
    """The request cannot be scored as given (maps to INVALID_ARGUMENT)."""

    reason = "invalid_argument"


class UnknownTaskError(InvalidRequestError):
    """The request names a task that is not loaded."""


class EmptyCandidatesError(InvalidRequestError):
    """A task of the request has no candidates."""


class TemplateFieldError(InvalidRequestError):
    """A template uses a field that the request data does not have."""


class PromptTooLongError(InvalidRequestError):
    """A rendered prompt exceeds a token budget or the model's maximum length."""


class TaskConfigError(BrewError):
    """A task definition in the prompts directory is broken (bad config,
    template syntax, or label words that are not single tokens)."""

    reason = "task_config"


class EngineConfigError(BrewError):
    """An engine cannot be started as asked (e.g. multi-item scoring on an
    engine that has none); the message names what to change."""

    reason = "engine_config"


class UnsupportedVllmError(EngineConfigError):
    """The installed vLLM is not the release Brew's vLLM modules are written
    against (brew.engines.vllm_version), or there is none; the message says
    what to install."""

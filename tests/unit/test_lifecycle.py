"""The lifecycle: which phase may follow which, who hears of it, what callers are told."""

from __future__ import annotations

import pytest

from serving.errors import NotReadyError
from serving.lifecycle import Lifecycle, Phase


def test_a_new_server_is_loading_and_refuses_calls_naming_why():
    lifecycle = Lifecycle()
    assert lifecycle.phase is Phase.LOADING and not lifecycle.serving
    with pytest.raises(NotReadyError, match="server not ready: model is loading; retry shortly"):
        lifecycle.require_serving()


def test_listeners_hear_the_current_phase_and_every_change():
    lifecycle = Lifecycle()
    heard: list[Phase] = []
    lifecycle.subscribe(heard.append)
    lifecycle.to_serving()
    lifecycle.require_serving()
    lifecycle.to_failed(RuntimeError("device lost"))
    lifecycle.to_restarting()
    lifecycle.to_serving()
    lifecycle.to_draining()
    assert heard == [Phase.LOADING, Phase.SERVING, Phase.FAILED, Phase.RESTARTING, Phase.SERVING, Phase.DRAINING]


def test_a_failure_names_the_engine_error():
    lifecycle = Lifecycle()
    lifecycle.to_serving()
    lifecycle.to_failed(RuntimeError("device lost"))
    with pytest.raises(NotReadyError, match="engine failed: device lost"):
        lifecycle.require_serving()


def test_draining_is_final():
    lifecycle = Lifecycle()
    heard: list[Phase] = []
    lifecycle.to_serving()
    lifecycle.subscribe(heard.append)
    lifecycle.to_draining()
    lifecycle.to_failed("late failure")  # news from a dying engine never reopens the server
    lifecycle.to_serving()
    assert lifecycle.phase is Phase.DRAINING and heard == [Phase.SERVING, Phase.DRAINING]
    with pytest.raises(NotReadyError, match="shutting down"):
        lifecycle.require_serving()


def test_a_failed_server_serves_again_only_through_a_restart():
    lifecycle = Lifecycle()
    lifecycle.to_serving()
    lifecycle.to_failed("boom")
    lifecycle.to_serving()  # not a legal move: the engine must be restarted first
    assert lifecycle.phase is Phase.FAILED
    lifecycle.to_restarting()
    lifecycle.to_serving()
    assert lifecycle.serving


def test_a_restart_keeps_the_failure_in_its_reason():
    lifecycle = Lifecycle()
    lifecycle.to_serving()
    lifecycle.to_failed(RuntimeError("device lost"))
    lifecycle.to_restarting()
    with pytest.raises(NotReadyError, match=r"engine is restarting after: engine failed: device lost; retry"):
        lifecycle.require_serving()

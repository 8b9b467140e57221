"""Brew's engine-core client against a scripted engine core: which future gets
which output, and what a failure, an abort or a dead engine does to them.
Real vLLM behind it is tested in tests/integration/test_engine_parity.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from vllm import SamplingParams
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, FinishReason
from vllm.v1.engine.exceptions import EngineDeadError

from brew.engines.vllm_core_client import EngineCoreClient

MAX_MODEL_LEN = 8


class ScriptedCore:
    """The parts of vLLM's AsyncMPClient the client uses; outputs are pushed by the test."""

    def __init__(self) -> None:
        self.added: list[EngineCoreRequest] = []
        self.aborted: list[str] = []
        self.outputs: asyncio.Queue[EngineCoreOutputs | Exception] = asyncio.Queue()
        self.resources = SimpleNamespace(engine_dead=False)

    async def add_request_async(self, request: EngineCoreRequest) -> None:
        self.added.append(request)

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)

    async def get_output_async(self) -> EngineCoreOutputs:
        item = await self.outputs.get()
        if isinstance(item, Exception):
            raise item
        return item

    def finish(self, *outputs: EngineCoreOutput) -> None:
        self.outputs.put_nowait(EngineCoreOutputs(outputs=list(outputs)))


class CountingProcessor:
    """vLLM's input processor, reduced to what the client asks of it."""

    def __init__(self) -> None:
        self.calls = 0

    def process_inputs(self, request_id, prompt, params, supported_tasks):  # noqa: ANN001, ANN201
        self.calls += 1
        return EngineCoreRequest(request_id=request_id, prompt_token_ids=prompt["prompt_token_ids"],
                                 mm_features=None, sampling_params=params, pooling_params=None,
                                 arrival_time=0.0, lora_request=None, cache_salt=None, data_parallel_rank=None)


def make_client() -> tuple[EngineCoreClient, ScriptedCore, CountingProcessor]:
    core, processor = ScriptedCore(), CountingProcessor()
    llm = SimpleNamespace(engine_core=core, input_processor=processor,
                          model_config=SimpleNamespace(max_model_len=MAX_MODEL_LEN))
    return EngineCoreClient(llm, ("generate",)), core, processor


def finished(request_id: str, reason: FinishReason = FinishReason.LENGTH) -> EngineCoreOutput:
    return EngineCoreOutput(request_id=request_id, new_token_ids=[1], finish_reason=reason)


PARAMS = SamplingParams(max_tokens=1)


@pytest.mark.asyncio
async def test_each_future_gets_its_own_finished_output_and_unfinished_ones_are_skipped():
    client, core, processor = make_client()
    first = await client.submit("a", [1, 2, 3], PARAMS)
    second = await client.submit("b", [4, 5], PARAMS)
    assert [r.request_id for r in core.added] == ["a", "b"]
    assert [r.prompt_token_ids for r in core.added] == [[1, 2, 3], [4, 5]]
    assert processor.calls == 1  # one validated template per params object
    assert client.num_unfinished_requests == 2

    core.finish(EngineCoreOutput(request_id="b", new_token_ids=[]), finished("b"))  # a partial output first
    assert (await second).request_id == "b"
    assert not first.done()
    core.finish(finished("a"))
    assert (await first).finish_reason == FinishReason.LENGTH
    assert client.num_unfinished_requests == 0
    await client.close()


@pytest.mark.asyncio
async def test_an_engine_error_on_one_request_fails_only_that_request():
    client, core, _ = make_client()
    bad = await client.submit("bad", [1], PARAMS)
    good = await client.submit("good", [1], PARAMS)
    core.finish(finished("bad", FinishReason.ERROR), finished("good"))
    with pytest.raises(RuntimeError, match="failed request bad"):
        await bad
    assert (await good).request_id == "good"
    await client.close()


@pytest.mark.asyncio
async def test_abort_forgets_the_requests_and_tells_the_engine_core():
    client, core, _ = make_client()
    future = await client.submit("x", [1], PARAMS)
    await client.abort(["x", "already-finished"])
    assert future.cancelled()
    assert core.aborted == ["x", "already-finished"]
    assert client.num_unfinished_requests == 0
    core.finish(finished("x"))  # a late output of an aborted request is dropped
    await asyncio.sleep(0)
    await client.close()


@pytest.mark.asyncio
async def test_a_dead_engine_fails_every_pending_request_and_every_later_submit():
    client, core, _ = make_client()
    pending = await client.submit("p", [1], PARAMS)
    client.check_health()  # alive
    core.resources.engine_dead = True
    with pytest.raises(EngineDeadError):
        client.check_health()
    with pytest.raises(EngineDeadError):
        await pending
    with pytest.raises(EngineDeadError):
        await client.submit("q", [1], PARAMS)
    await client.close()


@pytest.mark.asyncio
async def test_an_output_stream_error_reaches_every_waiting_caller():
    client, core, _ = make_client()
    pending = await client.submit("p", [1], PARAMS)
    core.outputs.put_nowait(EngineDeadError())
    with pytest.raises(EngineDeadError):
        await pending
    with pytest.raises(EngineDeadError):
        client.check_health()
    await client.close()


@pytest.mark.asyncio
async def test_prompts_follow_vllms_length_rule():
    client, core, _ = make_client()
    with pytest.raises(ValueError, match="0 tokens"):
        await client.submit("empty", [], PARAMS)
    with pytest.raises(ValueError, match="1 to 7"):  # a generating request needs room for its token
        await client.submit("long", list(range(MAX_MODEL_LEN)), PARAMS)
    assert core.added == [] and client.num_unfinished_requests == 0
    await client.submit("fits", list(range(MAX_MODEL_LEN - 1)), PARAMS)
    await client.close()


@pytest.mark.asyncio
async def test_close_fails_what_is_still_pending():
    client, _, _ = make_client()
    pending = await client.submit("p", [1], PARAMS)
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pending

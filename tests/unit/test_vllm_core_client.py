"""Brew's engine-core client against a scripted engine core: which future gets
which outputs, and what a failure, an abort or a dead engine does to them.
The scripted core decodes each message with Brew's engine-core side
(brew.engines.vllm_core_batch); real vLLM behind both is tested in
tests/integration/test_engine_parity.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from vllm import SamplingParams
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, EngineCoreRequest, FinishReason
from vllm.v1.engine.exceptions import EngineDeadError

from brew.engines import vllm_core_batch
from brew.engines.vllm_core_client import EngineCoreClient

MAX_MODEL_LEN = 8


class ScriptedCore:
    """The parts of vLLM's AsyncMPClient the client uses; each utility call
    is handled by Brew's engine-core method on a recording core; outputs are
    pushed by the test."""

    client_index = 3

    def __init__(self) -> None:
        self.added: list[EngineCoreRequest] = []
        self.messages = 0
        self.aborted: list[str] = []
        self.events: list[str] = []
        self.refuse: str | None = None
        self.outputs: asyncio.Queue[EngineCoreOutputs | Exception] = asyncio.Queue()
        self.resources = SimpleNamespace(engine_dead=False)

    # What EngineCore offers the method.
    def preprocess_add_request(self, request: EngineCoreRequest) -> tuple[EngineCoreRequest, int]:
        return request, 0

    def add_request(self, request: EngineCoreRequest, wave: int) -> None:
        self.added.append(request)
        self.events.append(f"add {request.request_id}")

    async def call_utility_async(self, method: str, *args):  # noqa: ANN201
        assert method == vllm_core_batch.METHOD_NAME
        if args[3]:
            self.messages += 1
        if self.refuse is not None:
            raise Exception(self.refuse)  # what vLLM raises for a failed utility call
        return vllm_core_batch.add_scoring_requests(self, *args)

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        self.aborted.extend(request_ids)
        self.events.append("abort " + ",".join(request_ids))

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


async def sent(client: EngineCoreClient, ids: list[str], prefix: list[int], tails: list[list[int]],
               params: SamplingParams = PARAMS) -> asyncio.Future:
    """Submit and let the submission's message leave."""
    future = client.submit(ids, prefix, tails, params)
    await asyncio.sleep(0)
    return future


@pytest.mark.asyncio
async def test_one_message_per_submission_and_outputs_in_submission_order():
    client, core, processor = make_client()
    first = await sent(client, ["a", "b"], [1, 2], [[3], [4, 5]])
    second = await sent(client, ["c"], [7], [[8]])
    assert core.messages == 2
    assert [r.request_id for r in core.added] == ["a", "b", "c"]
    assert [r.external_req_id for r in core.added] == ["a", "b", "c"]
    assert [r.prompt_token_ids for r in core.added] == [[1, 2, 3], [1, 2, 4, 5], [7, 8]]
    assert {r.client_index for r in core.added} == {ScriptedCore.client_index}  # outputs come back to this client
    assert core.added[0].sampling_params.max_tokens == 1
    assert processor.calls == 1  # one validated template per params object
    assert client.num_unfinished_requests == 3

    core.finish(EngineCoreOutput(request_id="b", new_token_ids=[]), finished("b"), finished("c"))  # a partial first
    assert [output.request_id for output in await second] == ["c"]
    await asyncio.sleep(0)
    assert not first.done()  # one of its two still running
    core.finish(finished("a"))
    assert [output.request_id for output in await first] == ["a", "b"]  # the order submitted, not finished
    assert client.num_unfinished_requests == 0
    await client.close()


@pytest.mark.asyncio
async def test_an_engine_error_on_one_request_fails_only_its_submission():
    client, core, _ = make_client()
    bad = await sent(client, ["bad", "bad-sibling"], [1], [[2], [3]])
    good = await sent(client, ["good"], [1], [[2]])
    core.finish(finished("bad", FinishReason.ERROR), finished("good"))
    with pytest.raises(RuntimeError, match="failed request bad"):
        await bad
    assert [output.request_id for output in await good] == ["good"]
    core.finish(finished("bad-sibling"))  # a late output of a failed submission is dropped
    await asyncio.sleep(0)
    assert client.num_unfinished_requests == 0
    await client.close()


@pytest.mark.asyncio
async def test_a_refused_message_fails_its_submission_with_the_engines_reason():
    client, core, _ = make_client()
    core.refuse = "Call to brew_add_scoring_requests method failed: no room"
    future = await sent(client, ["x"], [1], [[2]])
    with pytest.raises(Exception, match="no room"):
        await future
    await client.close()


@pytest.mark.asyncio
async def test_abort_forgets_the_requests_and_reaches_the_engine_after_their_message():
    client, core, _ = make_client()
    future = client.submit(["x", "y"], [1], [[2], [3]], PARAMS)  # not yet sent
    await client.abort(["x", "y", "already-finished"])
    assert future.cancelled()
    assert core.events == ["add x", "add y", "abort x,y,already-finished"]
    assert client.num_unfinished_requests == 0
    core.finish(finished("x"))  # a late output of an aborted request is dropped
    await asyncio.sleep(0)
    await client.close()


@pytest.mark.asyncio
async def test_a_dead_engine_fails_every_pending_request_and_every_later_submit():
    client, core, _ = make_client()
    pending = await sent(client, ["p"], [1], [[2]])
    client.check_health()  # alive
    core.resources.engine_dead = True
    with pytest.raises(EngineDeadError):
        client.check_health()
    with pytest.raises(EngineDeadError):
        await pending
    with pytest.raises(EngineDeadError):
        client.submit(["q"], [1], [[2]], PARAMS)
    await client.close()


@pytest.mark.asyncio
async def test_an_output_stream_error_reaches_every_waiting_caller():
    client, core, _ = make_client()
    pending = await sent(client, ["p"], [1], [[2]])
    core.outputs.put_nowait(EngineDeadError())
    with pytest.raises(EngineDeadError):
        await pending
    with pytest.raises(EngineDeadError):
        client.check_health()
    await client.close()


@pytest.mark.asyncio
async def test_prompts_follow_vllms_length_rule_before_anything_is_sent():
    client, core, _ = make_client()
    with pytest.raises(ValueError, match="0 tokens"):
        client.submit(["empty"], [], [[]], PARAMS)
    with pytest.raises(ValueError, match="1 to 7"):  # a generating request needs room for its token
        client.submit(["fits", "long"], [0, 1, 2], [[3], list(range(5))], PARAMS)
    with pytest.raises(ValueError, match="2 prompt tails for 1 request ids"):
        client.submit(["a"], [1], [[2], [3]], PARAMS)
    await asyncio.sleep(0)
    assert core.added == [] and client.num_unfinished_requests == 0
    await sent(client, ["fits"], list(range(MAX_MODEL_LEN - 2)), [[0]])
    assert len(core.added) == 1
    assert await client.submit([], [1], [], PARAMS) == []  # nothing to send
    await client.close()


@pytest.mark.asyncio
async def test_close_fails_what_is_still_pending():
    client, _, _ = make_client()
    pending = await sent(client, ["p"], [1], [[2]])
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await pending


@pytest.mark.asyncio
async def test_attach_names_the_missing_plugin():
    class CoreWithoutMethod:
        async def call_utility_async(self, method: str, *args):  # noqa: ANN201
            raise Exception(f"Call to {method} method failed: 'EngineCoreProc' object has no attribute")

    llm = SimpleNamespace(engine_core=CoreWithoutMethod(), output_handler=None)
    with pytest.raises(RuntimeError, match="VLLM_PLUGINS"):
        await EngineCoreClient.attach(llm)


@pytest.mark.asyncio
async def test_attach_refuses_an_asyncllm_whose_output_handler_runs():
    """AsyncLLM's handler would take the outputs meant for Brew's reader."""

    class CoreNeverAsked:
        async def call_utility_async(self, method: str, *args):  # noqa: ANN201
            raise AssertionError("the engine core is asked nothing once the handler is seen running")

    llm = SimpleNamespace(engine_core=CoreNeverAsked(), output_handler=object())
    with pytest.raises(RuntimeError, match="output handler is running"):
        await EngineCoreClient.attach(llm)


def test_the_template_travels_as_the_add_path_decodes_it():
    request = CountingProcessor().process_inputs("template", {"prompt_token_ids": [0]}, PARAMS, ())
    encoded = vllm_core_batch.encode_template(request)
    built = vllm_core_batch.build_requests(vllm_core_batch._templates(encoded), [5, 6], [[7], []], ["r1", "r2"], 12.5)
    assert [r.prompt_token_ids for r in built] == [[5, 6, 7], [5, 6]]
    assert [r.request_id for r in built] == ["r1", "r2"]
    assert {r.arrival_time for r in built} == {12.5}
    assert built[0].sampling_params.max_tokens == PARAMS.max_tokens
    assert built[0].sampling_params is built[1].sampling_params  # one decoded params object per message


def test_the_plugin_gives_vllms_engine_core_the_method_once():
    from vllm.v1.engine.core import EngineCore

    from brew.engines import vllm_plugin

    vllm_plugin.register()
    vllm_plugin.register()  # vLLM may load plugins more than once
    assert getattr(EngineCore, vllm_core_batch.METHOD_NAME) is vllm_core_batch.add_scoring_requests

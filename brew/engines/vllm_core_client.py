"""Requests straight to vLLM's engine core, finished outputs straight back.

vLLM's AsyncLLM front end does general work per request that scoring does
not need: it validates and copies the params, builds a per-request state for
detokenizing and streaming, and turns every engine output into a
RequestOutput with a dict of Logprob objects. For one-token scoring
requests that front end cost Brew's server about 0.4 ms of CPU per
candidate, four times the rest of the vLLM path (BENCHMARKS.md).

This client keeps AsyncLLM for what it does once (start the engine core
processes, hold the configs, shut down) and talks to its engine-core
client directly:
- each distinct params object goes through vLLM's own `process_inputs`
  once, giving a validated EngineCoreRequest; a request is that template
  with its own id, prompt ids and arrival time (`msgspec.structs.replace`);
- one reader task takes the engine core's outputs and resolves each
  request's future with its finished EngineCoreOutput;
- an abort drops the futures and tells the engine core.
AsyncLLM's own output handler is never started (it starts on its first
`add_request`, which this client never calls), so nothing else reads the
outputs.

Facts of vLLM 0.32 this relies on (read in its source):
- `AsyncLLM.engine_core` is an AsyncMPClient: `add_request_async` sends one
  EngineCoreRequest, `abort_requests_async(ids)` aborts by the ids the
  request carried (a no-op once the engine is dead), `get_output_async()`
  returns the next EngineCoreOutputs or raises the engine's error
  (EngineDeadError when the engine core reports itself dead).
- `InputProcessor.process_inputs` checks the params and the prompt and
  returns an EngineCoreRequest; what it checks of the prompt is its length
  (not empty; at most max_model_len, less one for a generating request) and,
  only with a tokenizer, its ids (vLLM runs here with
  `skip_tokenizer_init`). `submit` checks the same length rule; the ids come
  from the model's own tokenizer.
- `assign_request_id` gives vLLM's internal id (the external id plus a
  random suffix); the engine core keys requests by `request_id`, and the
  outputs carry it. Ids here are unique per client: a random prefix and a
  counter.
- A request finishes with one EngineCoreOutput whose `finish_reason` is
  set; FinishReason.ERROR means the engine failed that request. A scoring
  request (one generated token, or a pooling request) sends nothing before.
- When an engine-core process dies, the client's monitor thread sets
  `engine_core.resources.engine_dead` (the output socket may simply go
  quiet): `check_health` then fails every pending request with
  EngineDeadError, so no caller waits for an answer that cannot come.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Sequence

import msgspec
from vllm import PoolingParams, SamplingParams
from vllm.inputs.engine import tokens_input
from vllm.v1.engine import EngineCoreOutput, EngineCoreRequest, FinishReason
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError


class EngineCoreClient:
    """Submit prompts with shared params, await their finished outputs."""

    def __init__(self, llm: AsyncLLM, supported_tasks: tuple[str, ...]) -> None:
        self._llm = llm
        self._core = llm.engine_core
        self._supported_tasks = supported_tasks
        self._max_model_len = int(llm.model_config.max_model_len)
        self._templates: dict[int, tuple[SamplingParams | PoolingParams, EngineCoreRequest]] = {}
        self._pending: dict[str, asyncio.Future[EngineCoreOutput]] = {}
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._reader: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @classmethod
    async def attach(cls, llm: AsyncLLM) -> EngineCoreClient:
        """A client for a started AsyncLLM (asks the engine core its tasks once)."""
        return cls(llm, tuple(await llm.get_supported_tasks()))

    @property
    def num_unfinished_requests(self) -> int:
        return len(self._pending)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _template(self, params: SamplingParams | PoolingParams) -> EngineCoreRequest:
        """vLLM's own request for these params, validated once (params are
        built once per label set and never changed: see brew.engines.vllm_engine)."""
        entry = self._templates.get(id(params))
        if entry is None or entry[0] is not params:
            request = self._llm.input_processor.process_inputs(
                "template", tokens_input([0]), params, supported_tasks=self._supported_tasks)
            entry = self._templates[id(params)] = (params, request)
        return entry[1]

    def max_prompt_len(self, generates: bool) -> int:
        """vLLM's own length rule (see the module docstring): a prompt that
        generates a token leaves room for it."""
        return self._max_model_len - 1 if generates else self._max_model_len

    def _check_prompt(self, request_id: str, prompt_ids: Sequence[int], generates: bool) -> None:
        limit = self.max_prompt_len(generates)
        if not 0 < len(prompt_ids) <= limit:
            raise ValueError(f"request {request_id}: a prompt of {len(prompt_ids)} tokens; "
                             f"this engine takes 1 to {limit}")

    async def submit(self, request_id: str, prompt_ids: list[int],
                     params: SamplingParams | PoolingParams) -> asyncio.Future[EngineCoreOutput]:
        """Send one request; the future resolves with its finished output."""
        self.check_health()
        template = self._template(params)
        self._check_prompt(request_id, prompt_ids, template.sampling_params is not None)
        request = msgspec.structs.replace(template, request_id=request_id, external_req_id=request_id,
                                          prompt_token_ids=prompt_ids, arrival_time=time.time())
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_outputs(), name="brew-vllm-outputs")
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._core.add_request_async(request)
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        return future

    async def abort(self, request_ids: Sequence[str]) -> None:
        """Forget these requests and abort them in the engine core (finished
        or unknown ids are no-ops there)."""
        for request_id in request_ids:
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                future.cancel()
        await self._core.abort_requests_async(list(request_ids))

    async def _read_outputs(self) -> None:
        try:
            while True:
                outputs = await self._core.get_output_async()
                for output in outputs.outputs:
                    if output.finish_reason is None:
                        continue
                    future = self._pending.pop(output.request_id, None)
                    if future is None or future.done():
                        continue  # aborted meanwhile
                    if output.finish_reason == FinishReason.ERROR:
                        future.set_exception(RuntimeError(
                            f"vLLM's engine failed request {output.request_id} ({output.stop_reason})"))
                    else:
                        future.set_result(output)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the engine's error reaches every waiting caller
            self._fail_pending(error)

    def _fail_pending(self, error: BaseException) -> None:
        self._error = error
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def check_health(self) -> None:
        """EngineDeadError (or the engine's own error) once the engine core
        has died or its outputs failed; pending requests fail with it."""
        if self._error is None and self._core.resources.engine_dead:
            self._fail_pending(EngineDeadError())
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop reading; pending requests fail. The engine itself is AsyncLLM's to shut down."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._error is None:
            self._fail_pending(RuntimeError("the vLLM engine was closed"))

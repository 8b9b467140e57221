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
  once, giving a validated EngineCoreRequest: the template of every request
  with those params, encoded once;
- a submission (one group's candidates, or one group's packed requests) is
  one engine-core message: the template, the shared prefix, each prompt's
  tail and each request's id, added by Brew's engine-core method
  (brew.engines.vllm_core_batch) as vLLM's own ADD path adds a request;
- one reader task takes the engine core's outputs and resolves each
  submission's future once all its requests have finished;
- an abort drops the requests and tells the engine core.
AsyncLLM's own output handler must never run: it reads the same output
stream, and each output it took would be lost to this client. vLLM starts
it on the first `add_request` or `generate` (never called here) and, when
AsyncLLM is built inside a running event loop, at construction; so
brew.engines.vllm_engine builds AsyncLLM on a worker thread, and `attach`
refuses an AsyncLLM whose handler exists.

Facts of vLLM 0.32 this relies on (read in its source; the symbols are
checked by tests/unit/test_vllm_interface.py, the release by
brew.engines.vllm_version):
- `AsyncLLM.output_handler` is None until AsyncLLM starts its output
  handler task (`_run_output_handler`), then that task.
- `AsyncLLM.engine_core` is an AsyncMPClient: `call_utility_async(method,
  *args)` sends one UTILITY message to the engine core and returns the
  method's result, or raises its error (the reply never comes if the engine
  dies meanwhile, so the client waits for it in a task of its own, never in
  a caller); `abort_requests_async(ids)` aborts by the ids the requests
  carried (a no-op once the engine is dead); `get_output_async()` returns
  the next EngineCoreOutputs or raises the engine's error (EngineDeadError
  when the engine core reports itself dead); `client_index` is the index
  outputs are routed back by.
- `InputProcessor.process_inputs` checks the params and the prompt and
  returns an EngineCoreRequest; what it checks of the prompt is its length
  (not empty; at most max_model_len, less one when the model runs as a
  generating runner, as it does for SamplingParams requests here) and,
  only with a tokenizer, its ids (vLLM runs here with
  `skip_tokenizer_init`). `submit` checks the same length rule; the ids come
  from the model's own tokenizer.
- The engine core keys requests by `request_id`, and the outputs carry it.
  Ids here are unique per client: a random prefix and a counter.
- A request finishes with one EngineCoreOutput whose `finish_reason` is
  set; FinishReason.ERROR means the engine failed that request. A scoring
  request (one generated token, or a pooling request) sends nothing before.
- The zmq.asyncio socket sends a message when `send_multipart` is called
  (unless the peer's queue is full), so a submission's message leaves in
  the first step of its task; asyncio runs ready callbacks in the order they
  were scheduled, so `abort`, which yields to the loop once before it sends,
  reaches the engine core after every submission made before it.
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
from vllm.v1.engine import EngineCoreOutput, FinishReason
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError

from brew.engines.vllm_core_batch import METHOD_NAME, check_pairs, encode_template

Params = SamplingParams | PoolingParams


class _Template:
    """vLLM's validated request for one params object, encoded for the engine core."""

    __slots__ = ("params", "encoded", "generates")

    def __init__(self, params: Params, encoded: bytes, generates: bool) -> None:
        self.params = params
        self.encoded = encoded
        self.generates = generates


class _Submission:
    """The requests of one engine-core message: their outputs, in order,
    and the future that resolves when the last has finished."""

    __slots__ = ("future", "outputs", "remaining")

    def __init__(self, future: asyncio.Future[list[EngineCoreOutput]], size: int) -> None:
        self.future = future
        self.outputs: list[EngineCoreOutput | None] = [None] * size
        self.remaining = size

    def finish(self, index: int, output: EngineCoreOutput) -> None:
        self.outputs[index] = output
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self.outputs)  # type: ignore[arg-type]

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class EngineCoreClient:
    """Submit prompts with shared params, await their finished outputs."""

    def __init__(self, llm: AsyncLLM, supported_tasks: tuple[str, ...]) -> None:
        self._llm = llm
        self._core = llm.engine_core
        self._supported_tasks = supported_tasks
        self._max_model_len = int(llm.model_config.max_model_len)
        self._templates: dict[int, _Template] = {}
        self._pending: dict[str, tuple[_Submission, int]] = {}
        self._adding: set[asyncio.Task[None]] = set()
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count()
        self._reader: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @classmethod
    async def attach(cls, llm: AsyncLLM) -> EngineCoreClient:
        """A client for a started AsyncLLM: asks the engine core its tasks,
        and checks it has Brew's method (an engine core started without
        Brew's vLLM plugin lacks it) and that AsyncLLM's own output handler
        is not running (see the module docstring)."""
        if llm.output_handler is not None:
            raise RuntimeError(
                "AsyncLLM's output handler is running: it would take engine-core outputs meant for Brew's "
                "client, whose requests would then never finish; build AsyncLLM outside a running event "
                "loop (VllmEngine.start builds it on a worker thread) and never call its add_request or generate")
        try:
            await llm.engine_core.call_utility_async(METHOD_NAME, b"", [], [], [], 0.0)
        except Exception as error:
            raise RuntimeError(
                f"vLLM's engine core has no {METHOD_NAME} method ({error}): Brew's vLLM plugin "
                "(entry point `brew` of group vllm.general_plugins) was not loaded there; install Brew "
                "into the environment vLLM runs in, and if VLLM_PLUGINS is set, name `brew` in it") from error
        return cls(llm, tuple(await llm.get_supported_tasks()))

    @property
    def num_unfinished_requests(self) -> int:
        return len(self._pending)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def _template(self, params: Params) -> _Template:
        """vLLM's own request for these params, validated and encoded once
        (params are built once per label set and never changed: see
        brew.engines.vllm_engine)."""
        template = self._templates.get(id(params))
        if template is None or template.params is not params:
            request = self._llm.input_processor.process_inputs(
                "template", tokens_input([0]), params, supported_tasks=self._supported_tasks)
            request = msgspec.structs.replace(request, client_index=self._core.client_index)
            template = self._templates[id(params)] = _Template(
                params, encode_template(request), request.sampling_params is not None)
        return template

    def max_prompt_len(self, generates: bool) -> int:
        """vLLM's own length rule (see the module docstring): a prompt that
        generates a token leaves room for it."""
        return self._max_model_len - 1 if generates else self._max_model_len

    def _check_prompt(self, request_id: str, length: int, generates: bool) -> None:
        limit = self.max_prompt_len(generates)
        if not 0 < length <= limit:
            raise ValueError(f"request {request_id}: a prompt of {length} tokens; "
                             f"this engine takes 1 to {limit}")

    def submit(self, request_ids: Sequence[str], prefix: Sequence[int], tails: Sequence[Sequence[int]],
               params: Params) -> asyncio.Future[list[EngineCoreOutput]]:
        """Send the prompts `prefix + tail`, one engine request per tail with
        the id of the same position, in one engine-core message; the future
        resolves with their finished outputs in that order. Prompts that
        break vLLM's length rule raise ValueError before anything is sent."""
        self.check_health()
        check_pairs(tails, request_ids)
        template = self._template(params)
        for request_id, tail in zip(request_ids, tails):
            self._check_prompt(request_id, len(prefix) + len(tail), template.generates)
        submission = _Submission(asyncio.get_running_loop().create_future(), len(tails))
        if not tails:
            submission.future.set_result([])
            return submission.future
        for index, request_id in enumerate(request_ids):
            self._pending[request_id] = (submission, index)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_outputs(), name="brew-vllm-outputs")
        adding = asyncio.create_task(self._add(submission, (
            template.encoded, prefix, tails, request_ids, time.time())), name="brew-vllm-add")
        self._adding.add(adding)
        adding.add_done_callback(self._adding.discard)
        return submission.future

    async def _add(self, submission: _Submission, args: tuple) -> None:
        """Send one submission's message and wait for the engine core's
        answer in this task, so that no caller waits for a reply a dead
        engine never sends; a refusal fails the submission."""
        try:
            await self._core.call_utility_async(METHOD_NAME, *args)
        except Exception as error:
            submission.fail(error)

    async def abort(self, request_ids: Sequence[str]) -> None:
        """Forget these requests and abort them in the engine core (finished
        or unknown ids are no-ops there). Yields to the loop first, so every
        submission made before has been sent (see the module docstring)."""
        for request_id in request_ids:
            entry = self._pending.pop(request_id, None)
            if entry is not None and not entry[0].future.done():
                entry[0].future.cancel()
        await asyncio.sleep(0)
        await self._core.abort_requests_async(list(request_ids))

    async def _read_outputs(self) -> None:
        try:
            while True:
                outputs = await self._core.get_output_async()
                for output in outputs.outputs:
                    if output.finish_reason is None:
                        continue
                    entry = self._pending.pop(output.request_id, None)
                    if entry is None or entry[0].future.done():
                        continue  # aborted or failed meanwhile
                    submission, index = entry
                    if output.finish_reason == FinishReason.ERROR:
                        submission.fail(RuntimeError(
                            f"vLLM's engine failed request {output.request_id} ({output.stop_reason})"))
                    else:
                        submission.finish(index, output)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the engine's error reaches every waiting caller
            self._fail_pending(error)

    def _fail_pending(self, error: BaseException) -> None:
        self._error = error
        pending, self._pending = self._pending, {}
        for submission, _ in pending.values():
            submission.fail(error)

    def check_health(self) -> None:
        """EngineDeadError (or the engine's own error) once the engine core
        has died or its outputs failed; pending requests fail with it."""
        if self._error is None and self._core.resources.engine_dead:
            self._fail_pending(EngineDeadError())
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop reading and sending; pending requests fail. The engine itself
        is AsyncLLM's to shut down."""
        tasks = [*self._adding, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._error is None:
            self._fail_pending(RuntimeError("the vLLM engine was closed"))

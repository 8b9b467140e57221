"""Many scoring requests in one engine-core message: both sides of it.

vLLM's engine-core protocol carries one request per ZeroMQ message (ADD),
and a ranking call is many requests that differ only in their ids and the
tails of their prompts. Sent one by one, they cost Brew's server a message
encoded and sent per candidate (pyzmq's send alone was 28% of the engine
client's CPU). This module adds one engine-core method, called through
vLLM's utility messages: the client sends the request template (encoded
once per params object), the shared prefix, each prompt's tail and each
request's id; the engine core builds the requests and adds them exactly as
its ADD path does. Outputs come back as for any request, one per request.

Facts of vLLM 0.32 this relies on (read in its source, vllm/v1/engine/):
- A UTILITY message (client index, call id, method name, args) is handled on
  the engine core's busy-loop thread, between steps: it calls the EngineCore
  method of that name with the args as msgpack decoded them (only a
  parameter annotated with a msgspec Struct class is converted; these are
  not, so bytes, lists, strings and floats arrive as such) and answers with
  the return value or the error's text (core.py, `_handle_client_request`,
  `_invoke_utility_method`, `_convert_msgspec_args`). During shutdown a
  utility call is refused (`_reject_utility_in_shutdown`), so no request is
  added then.
- The ADD path decodes an EngineCoreRequest with `MsgpackDecoder(
  EngineCoreRequest)`, then runs `preprocess_add_request` (the Request and
  its block hashes; on the input thread) and `add_request` (busy loop);
  `add_scoring_requests` does the same, both on the busy-loop thread.
- The engine core never writes to a request's SamplingParams (only the
  client's input processor does), so the requests of one message share one
  decoded params object. PoolingParams get one write in the model runner
  (`get_pooling_updates(task).apply` sets `requires_token_ids`), the same
  value for every request of Brew's pooler, so sharing is safe there too.
- Outputs are routed to the client named by the request's `client_index`.
- `vllm.general_plugins` entry points run in the engine-core process from
  `EngineCore.__init__`, before any message is read
  (brew.engines.vllm_plugin installs the method there).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

# The engine-core method's name: what the client's utility call names.
METHOD_NAME = "brew_add_scoring_requests"
# Decoded templates an engine core keeps (one per label set and kind in use).
_TEMPLATE_CACHE_SIZE = 64


def encode_template(request: EngineCoreRequest) -> bytes:
    """The template as one msgpack buffer, decodable like an ADD message."""
    buffers = MsgpackEncoder().encode(request)
    if len(buffers) != 1:
        raise ValueError("a scoring request template cannot carry tensors")
    return bytes(buffers[0])


class _TemplateDecoder:
    """Decodes templates as the ADD path decodes requests, each once."""

    def __init__(self) -> None:
        self._decoder = MsgpackDecoder(EngineCoreRequest)
        self._decoded: dict[bytes, EngineCoreRequest] = {}

    def __call__(self, encoded: bytes) -> EngineCoreRequest:
        request = self._decoded.get(encoded)
        if request is None:
            if len(self._decoded) >= _TEMPLATE_CACHE_SIZE:
                self._decoded.clear()
            request = self._decoded[encoded] = self._decoder.decode(encoded)
        return request


_templates = _TemplateDecoder()


def check_pairs(tails: Sequence[Sequence[int]], request_ids: Sequence[str]) -> None:
    """One request id per prompt tail, or ValueError (checked on both sides
    of the message: zip would drop the extras silently)."""
    if len(tails) != len(request_ids):
        raise ValueError(f"{len(tails)} prompt tails for {len(request_ids)} request ids")


def build_requests(template: EngineCoreRequest, prefix: Sequence[int], tails: Sequence[Sequence[int]],
                   request_ids: Sequence[str], arrival_time: float) -> list[EngineCoreRequest]:
    """One request per tail: the template with its own id, prompt and arrival time."""
    check_pairs(tails, request_ids)
    prefix = list(prefix)
    return [
        msgspec.structs.replace(template, request_id=request_id, external_req_id=request_id,
                                prompt_token_ids=prefix + list(tail), arrival_time=arrival_time)
        for request_id, tail in zip(request_ids, tails)
    ]


def add_scoring_requests(core, template: bytes, prefix: list, tails: list, request_ids: list,  # noqa: ANN001
                         arrival_time: float) -> int:
    """The engine-core method (bound to EngineCore by `install`): add one
    request per tail, as the ADD path would; the number added. A failure
    part-way leaves the earlier ones added: the client aborts them all. With
    no requests it decodes nothing: the client's probe that the method is
    there."""
    if not request_ids:
        return 0
    for request in build_requests(_templates(template), prefix, tails, request_ids, arrival_time):
        core.add_request(*core.preprocess_add_request(request))
    return len(request_ids)


def install() -> None:
    """Give vLLM's EngineCore the method (idempotent; vLLM loads plugins in
    several processes, and more than once)."""
    from vllm.v1.engine.core import EngineCore

    if getattr(EngineCore, METHOD_NAME, None) is not add_scoring_requests:
        setattr(EngineCore, METHOD_NAME, add_scoring_requests)

"""Every piece of vLLM that Brew's vLLM modules use is still there, in the shape they use.

Brew's vLLM modules (brew.engines.vllm_engine, vllm_core_client,
vllm_core_batch, vllm_plugin and brew.engines.vllm_multi_item) lean on
vLLM's internals: engine-core client methods, a method added to EngineCore,
EngineCoreRequest's fields, attention layers' `impl`, the attention backend
registry, the pooler interface. vLLM promises nothing about those, so
brew.engines.vllm_version pins one exact release. When the release changes,
this test says in seconds what moved, symbol by symbol, before an engine is
ever started: each case names the vLLM symbol and what Brew uses it for
(the facts behind each use are listed in the docstring of the module that
relies on them).

It imports vLLM's modules only (no engine, no model, no plugin loaded) and
checks, for each symbol Brew imports and each attribute it reads or method
it calls: that it exists; the fields of the structs Brew reads or sets
(msgspec `__struct_fields__`, dataclass fields, NamedTuple fields); that the
callables take the arguments Brew passes (inspect.signature(...).bind); that
Brew's subclasses of vLLM's abstract classes implement every abstract method
and take the arguments vLLM calls them with; and, for instance attributes
and for how vLLM calls into Brew, the assignment or call in vLLM's source.
What those facts do at run time is checked by the `vllm`-marked tests, which
start a real engine.

It runs against whichever vLLM is installed (Brew's release check is passed
over here), so a candidate release can be checked before SUPPORTED_VLLM
changes. The last test keeps the `cpu` and `gpu` extras of pyproject.toml
pinned to SUPPORTED_VLLM.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pytest

pytest.importorskip("vllm")


BREW_VLLM_MODULES = [
    "brew.engines.vllm_version",
    "brew.engines.vllm_plugin",
    "brew.engines.vllm_core_batch",
    "brew.engines.vllm_core_client",
    "brew.engines.vllm_engine",
    "brew.engines.vllm_multi_item.attention",
    "brew.engines.vllm_multi_item.cpu_kernel",
    "brew.engines.vllm_multi_item.model",
    "brew.engines.vllm_multi_item.plugin",
    "brew.engines.vllm_multi_item.requests",
]


# --- What a check can say ----------------------------------------------------------------------------
# Paths are "module:Qualified.name" (a module alone has no colon), resolved when the check runs, so a
# symbol that moved fails its own case only.


def sym(path: str) -> typing.Any:
    module_name, _, qualname = path.partition(":")
    obj: typing.Any = importlib.import_module(module_name)
    for part in qualname.split(".") if qualname else ():
        assert hasattr(obj, part), f"{path}: vLLM's {obj!r} has no attribute {part!r}"
        obj = getattr(obj, part)
    return obj


def field_names(cls: type) -> set[str]:
    if hasattr(cls, "__struct_fields__"):  # msgspec.Struct
        return set(cls.__struct_fields__)
    if dataclasses.is_dataclass(cls):
        return {field.name for field in dataclasses.fields(cls)}
    if hasattr(cls, "_fields"):  # NamedTuple
        return set(cls._fields)
    raise AssertionError(f"{cls!r} is no longer a msgspec struct, a dataclass or a NamedTuple")


def require_fields(path: str, *names: str) -> None:
    missing = sorted(set(names) - field_names(sym(path)))
    assert not missing, f"{path} has no field(s) {missing}"


def require_default(path: str, name: str, value: object) -> None:
    (field,) = [field for field in dataclasses.fields(sym(path)) if field.name == name]
    assert field.default == value, f"{path}.{name} defaults to {field.default!r}, not {value!r}"


def require_attrs(path: str, *names: str) -> None:
    obj = sym(path)
    missing = [name for name in names if not hasattr(obj, name)]
    assert not missing, f"{path} has no attribute(s) {missing}"


def require_annotation(path: str, name: str) -> None:
    assert name in inspect.get_annotations(sym(path)), f"{path} no longer declares {name}"


def require_call(path: str, *args: object, **kwargs: object) -> None:
    """vLLM's callable at `path` takes these arguments (a method looked up on its class: after self)."""
    module_name, _, qualname = path.partition(":")
    owner_name, _, name = qualname.rpartition(".")
    wants_self = False
    if owner_name and inspect.isclass(owner := sym(f"{module_name}:{owner_name}")):
        wants_self = not isinstance(inspect.getattr_static(owner, name), (staticmethod, classmethod))
    signature = inspect.signature(sym(path))
    try:
        signature.bind(*(("self",) if wants_self else ()), *args, **kwargs)
    except TypeError as error:
        raise AssertionError(f"{path}{signature} no longer takes Brew's arguments: {error}") from None


def require_coroutine(path: str) -> None:
    assert inspect.iscoroutinefunction(sym(path)), f"{path} is no longer a coroutine function"


def _compact(text: str) -> str:
    """Source without comments and whitespace, so that a check survives reformatting."""
    return re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", text))


def require_source(path: str, *snippets: str) -> None:
    """vLLM's source of `path` still contains each snippet (whitespace and comments ignored)."""
    source = _compact(inspect.getsource(sym(path)))
    missing = [snippet for snippet in snippets if _compact(snippet) not in source]
    assert not missing, f"{path}'s source no longer contains {missing}"


def require_sets(path: str, *attrs: str) -> None:
    """The function at `path` (an __init__, typically) assigns these instance attributes."""
    source = inspect.getsource(sym(path))
    missing = [attr for attr in attrs if not re.search(rf"self\.{attr}\s*(:[^=\n]+)?=(?!=)", source)]
    assert not missing, f"{path} no longer sets self.{', self.'.join(missing)}"


def _parameter_names(signature: inspect.Signature) -> list[str]:
    return [parameter.name for parameter in signature.parameters.values()
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]


def require_same_parameters(brew_path: str, vllm_path: str) -> None:
    """Brew's override takes vLLM's base signature: the same leading names, by position and by name."""
    base, ours = inspect.signature(sym(vllm_path)), inspect.signature(sym(brew_path))
    names = _parameter_names(base)
    assert list(ours.parameters)[: len(names)] == names, (
        f"vLLM's {vllm_path}{base} != Brew's {brew_path}{ours}")
    try:
        ours.bind(*names)
        ours.bind(**{name: name for name in names})
    except TypeError as error:
        raise AssertionError(
            f"Brew's {brew_path}{ours} cannot take vLLM's call {vllm_path}{base}: {error}") from None


def require_implements(brew_path: str, vllm_path: str, *methods: str) -> None:
    """Brew's subclass implements every abstract method of vLLM's class, and
    each of `methods` takes vLLM's base signature."""
    brew_cls, vllm_cls = sym(brew_path), sym(vllm_path)
    assert issubclass(brew_cls, vllm_cls), f"{brew_path} no longer subclasses {vllm_path}"
    missing = sorted(brew_cls.__abstractmethods__)
    assert not missing, f"vLLM's {vllm_path} has abstract methods {missing} that {brew_path} lacks"
    for method in methods:
        require_same_parameters(f"{brew_path}.{method}", f"{vllm_path}.{method}")


# --- Checks that need a few lines ----------------------------------------------------------------------


def _sampling_params_as_brew_builds_them() -> None:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=[5, 7], detokenize=False,
                            output_kind=RequestOutputKind.FINAL_ONLY, skip_clone=True)
    clone = params.clone()
    assert clone is not params and clone.logprob_token_ids is params.logprob_token_ids, (
        "SamplingParams.clone() with skip_clone is no longer a shallow copy")


def _engine_args_as_brew_builds_them() -> None:
    from brew.engines.options import VllmOptions
    from brew.engines.vllm_engine import engine_args

    passed = {"model", "dtype", "kv_cache_memory_bytes", "enable_prefix_caching", "skip_tokenizer_init",
              "disable_log_stats", "hf_overrides", "quantization"}
    passed |= {field.name for field in dataclasses.fields(VllmOptions)} - {"kv_cache_gib"}
    require_fields("vllm.engine.arg_utils:AsyncEngineArgs", *passed)
    engine_args(VllmOptions(), "/no/model", dtype="float32", on_cpu=True)  # builds AsyncEngineArgs only
    engine_args(VllmOptions(), "/no/model", dtype="bfloat16", on_cpu=False, quantization="fp8")


def _head_dtype_is_read_from_the_hf_config() -> None:
    """hf_overrides' head_dtype reaches ModelConfig.head_dtype, and the logits
    processor casts an unquantized head to it."""
    require_source("vllm.config.model:_get_head_dtype", 'getattr(config, "head_dtype", None)')
    require_attrs("vllm.config:ModelConfig", "head_dtype")
    require_source("vllm.model_executor.layers.logits_processor:LogitsProcessor.__init__",
                   "self.head_dtype = model_config.head_dtype")
    require_source("vllm.model_executor.layers.logits_processor:LogitsProcessor._apply_head",
                   "hidden_states.to(self.head_dtype)", "lm_head.weight.to(self.head_dtype)")


def _int8_w8a8_runs_on_the_cpu_build() -> None:
    """compressed-tensors int8 W8A8 picks the CPU int8 kernel, whose oneDNN path
    (no AMX needed) quantizes activations per token at run time."""
    require_attrs("vllm.model_executor.layers.quantization.compressed_tensors.schemes:CompressedTensorsW8A8Int8",
                  "create_weights", "apply_weights")
    require_source("vllm.model_executor.kernels.linear.scaled_mm.cpu:CPUInt8ScaledMMLinearKernel.is_supported",
                   "if not current_platform.is_cpu():")
    require_source("vllm.model_executor.kernels.linear.scaled_mm.cpu:CPUInt8ScaledMMLinearKernel."
                   "process_weights_after_loading", "self.linear_method = self._apply_weights_onednn")
    require_source("vllm._custom_ops:onednn_scaled_int8_quant", "torch.ops._C.dynamic_scaled_int8_quant(")
    require_attrs("vllm._custom_ops", "onednn_scaled_mm", "create_onednn_scaled_mm")


def _engine_core_output_types() -> None:
    from vllm.v1.engine import EngineCoreOutput
    from vllm.v1.metrics.stats import PrefillStats
    from vllm.v1.outputs import LogprobsLists

    hints = typing.get_type_hints(EngineCoreOutput)
    assert hints["new_logprobs"] == LogprobsLists | None, hints["new_logprobs"]
    assert hints["prefill_stats"] == PrefillStats | None, hints["prefill_stats"]


def _clients_are_async_mp_clients() -> None:
    from vllm.v1.engine import core_client

    returned = inspect.signature(core_client.EngineCoreClient.make_async_mp_client).return_annotation
    assert returned in ("AsyncMPClient", core_client.AsyncMPClient), returned
    for cls in (core_client.DPAsyncMPClient, core_client.DPLBAsyncMPClient):  # data_parallel_size > 1
        assert issubclass(cls, core_client.AsyncMPClient), cls


def _request_template_round_trip() -> None:
    import msgspec
    from vllm import SamplingParams
    from vllm.v1.engine import EngineCoreRequest
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    assert issubclass(EngineCoreRequest, msgspec.Struct)  # msgspec.structs.replace builds each request
    names = EngineCoreRequest.__struct_fields__
    required = names[: len(names) - len(EngineCoreRequest.__struct_defaults__)]
    fields: dict[str, object] = dict.fromkeys(required)
    fields.update(request_id="template", prompt_token_ids=[0], arrival_time=0.0, client_index=3,
                  sampling_params=SamplingParams(max_tokens=1, logprob_token_ids=[5]))
    buffers = MsgpackEncoder().encode(EngineCoreRequest(**fields))
    assert len(buffers) == 1, "a tensor-free EngineCoreRequest no longer encodes to one buffer"
    template = MsgpackDecoder(EngineCoreRequest).decode(bytes(buffers[0]))
    request = msgspec.structs.replace(template, request_id="r1", external_req_id="r1",
                                      prompt_token_ids=[0, 1], arrival_time=2.0)
    assert (request.client_index, request.sampling_params.logprob_token_ids) == (3, [5])


def _brew_method_name_is_free() -> None:
    from vllm.v1.engine.core import EngineCore, EngineCoreProc

    from brew.engines.vllm_core_batch import METHOD_NAME, add_scoring_requests

    for cls in (EngineCore, EngineCoreProc):
        assert getattr(cls, METHOD_NAME, add_scoring_requests) is add_scoring_requests, (
            f"vLLM's {cls.__name__} has a {METHOD_NAME} of its own")


def _utility_args_reach_brew_unconverted() -> None:
    from vllm.v1.engine.core import EngineCoreProc

    from brew.engines.vllm_core_batch import add_scoring_requests

    args = (b"template", [1, 2], [[3], [4]], ["a", "b"], 1.5)
    bound = add_scoring_requests.__get__(object())  # as getattr(engine_core, METHOD_NAME) gives it
    assert EngineCoreProc._convert_msgspec_args(bound, args) == args


def _backend_registry() -> None:
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    assert isinstance(AttentionBackendEnum.__members__, Mapping)
    # What __members__ shows, so the plugin skips a second registration.
    require_source("vllm.v1.attention.backends.registry:AttentionBackendEnum.register",
                   "cls._member_map_[name] = member")


def _stock_models_take_brews_calls() -> None:
    for module, name in (("vllm.model_executor.models.llama", "LlamaForCausalLM"),
                         ("vllm.model_executor.models.qwen2", "Qwen2ForCausalLM"),
                         ("vllm.model_executor.models.qwen3", "Qwen3ForCausalLM")):
        require_call(f"{module}:{name}.__init__", vllm_config=object(), prefix="")
        require_call(f"{module}:{name}.forward", "input_ids", "positions", None, None)
        require_call(f"{module}:{name}.compute_logits", "hidden")


def _brew_models_are_pooling_mrope_models() -> None:
    from vllm.model_executor.models.interfaces import supports_mrope
    from vllm.model_executor.models.interfaces_base import is_pooling_model

    from brew.engines.vllm_multi_item import model
    from brew.engines.vllm_multi_item.names import ARCHITECTURES

    for name in ARCHITECTURES.values():
        cls = getattr(model, name)
        assert is_pooling_model(cls) and supports_mrope(cls), (
            f"vLLM no longer takes {name} as a pooling M-RoPE model")


def _top_level_mrope_section_switches_mrope_on() -> None:
    from transformers import PretrainedConfig
    from vllm.transformers_utils.config import uses_mrope

    assert uses_mrope(PretrainedConfig(mrope_section=[1, 1, 1]))
    assert not uses_mrope(PretrainedConfig())


def _pooling_states() -> None:
    from vllm.v1.pool.metadata import PoolingStates

    state = PoolingStates()
    state.hidden_states_cache.append(object())
    state.clean()
    assert state.hidden_states_cache == []


def _pooling_params_as_brew_builds_them() -> None:
    from vllm.tasks import POOLING_TASKS

    from brew.engines.vllm_multi_item.names import POOLING_TASK
    from brew.engines.vllm_multi_item.requests import pooling_params

    assert POOLING_TASK in POOLING_TASKS
    params = pooling_params((5, 7))  # builds vLLM's PoolingParams
    assert params.extra_kwargs is not None and params.skip_reading_prefix_cache is False


# --- The uses, per Brew module ------------------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """One thing Brew takes from vLLM: `what` (the symbol), `why` (what Brew uses it for), `check`."""

    what: str
    why: str
    check: Callable[[], object]

    @property
    def id(self) -> str:
        return f"{self.what} ({self.why})"


def uses(*entries: Use) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("use", entries, ids=[entry.id for entry in entries])


ASYNC_LLM = "vllm.v1.engine.async_llm:AsyncLLM"
CORE_CLIENT = "vllm.v1.engine.core_client"
CORE = "vllm.v1.engine.core"
BACKEND = "vllm.v1.attention.backend"
LAYER = "vllm.model_executor.layers.attention.attention"
POOL = "vllm.v1.pool.metadata"
MULTI_ITEM = "brew.engines.vllm_multi_item"

VLLM_ENGINE = (
    Use("vllm.__version__", "brew.engines.vllm_version reads the installed release",
        lambda: require_attrs("vllm", "__version__")),
    Use("SamplingParams", "one greedy token with the logprobs of exactly the label ids, shared per label set",
        _sampling_params_as_brew_builds_them),
    Use("RequestOutputKind.FINAL_ONLY", "scoring requests report once, finished",
        lambda: require_attrs("vllm.sampling_params:RequestOutputKind", "FINAL_ONLY")),
    Use("AsyncEngineArgs", "every setting engine_args passes, VllmOptions' included",
        _engine_args_as_brew_builds_them),
    Use("ModelConfig.head_dtype", "hf_overrides head_dtype float32: the LM head's matmul in fp32",
        _head_dtype_is_read_from_the_hf_config),
    Use("CPUInt8ScaledMMLinearKernel", "brew quantize's int8 W8A8 checkpoints run on the x86 CPU build",
        _int8_w8a8_runs_on_the_cpu_build),
    Use("current_platform.is_cpu", "CPU defaults of memory share and block size",
        lambda: require_call("vllm.platforms:current_platform.is_cpu")),
    Use("AsyncLLM.from_engine_args", "starts the engine core",
        lambda: require_call(f"{ASYNC_LLM}.from_engine_args", "args")),
    Use("AsyncLLM.shutdown", "VllmEngine.close, and a failed start",
        lambda: require_call(f"{ASYNC_LLM}.shutdown")),
    Use("AsyncLLM.vllm_config", "kv_block_size reads vllm_config.cache_config.block_size", lambda: (
        require_sets(f"{ASYNC_LLM}.__init__", "vllm_config"),
        require_fields("vllm.config:VllmConfig", "cache_config"),
        require_fields("vllm.config:CacheConfig", "block_size"))),
    Use("EngineCoreOutput", "label logprobs, pooling output, cached tokens, request id",
        lambda: require_fields("vllm.v1.engine:EngineCoreOutput", "request_id", "new_logprobs",
                               "pooling_output", "prefill_stats")),
    Use("EngineCoreOutput types", "new_logprobs is LogprobsLists, prefill_stats PrefillStats",
        _engine_core_output_types),
    Use("LogprobsLists", "row 0's logprob_token_ids and logprobs",
        lambda: require_fields("vllm.v1.outputs:LogprobsLists", "logprob_token_ids", "logprobs")),
    Use("PrefillStats.num_cached_tokens", "prompt tokens the prefix cache served",
        lambda: require_fields("vllm.v1.metrics.stats:PrefillStats", "num_cached_tokens")),
    Use("ModelConfig.logprobs_mode", "logprobs are the raw log-softmax by default",
        lambda: require_default("vllm.config:ModelConfig", "logprobs_mode", "raw_logprobs")),
    Use("Sampler.compute_logprobs", "fp32 full-vocabulary log-softmax, as the torch engines compute it",
        lambda: require_source("vllm.v1.sample.sampler:Sampler.compute_logprobs",
                               "logits.log_softmax(dim=-1, dtype=torch.float32)")),
    Use("Sampler.gather_specific_token_logprobs", "the row holds the sampled token, then the requested ids",
        lambda: require_attrs("vllm.v1.sample.sampler:Sampler", "gather_specific_token_logprobs")),
)

VLLM_CORE_CLIENT = (
    Use("PoolingParams, SamplingParams", "the params a template is built for",
        lambda: require_attrs("vllm", "PoolingParams", "SamplingParams")),
    Use("tokens_input", "the template's prompt",
        lambda: require_call("vllm.inputs.engine:tokens_input", [0])),
    Use("FinishReason.ERROR", "the engine failed that request",
        lambda: require_attrs("vllm.v1.engine:FinishReason", "ERROR")),
    Use("EngineDeadError()", "check_health fails pending requests with it",
        lambda: require_call("vllm.v1.engine.exceptions:EngineDeadError")),
    Use("AsyncLLM.output_handler", "None until AsyncLLM starts its handler; attach refuses a running one",
        lambda: (require_sets(f"{ASYNC_LLM}.__init__", "output_handler"),
                 require_sets(f"{ASYNC_LLM}._run_output_handler", "output_handler"))),
    Use("AsyncLLM.engine_core", "the engine-core client Brew's client talks to", lambda: require_source(
        f"{ASYNC_LLM}.__init__", "self.engine_core = EngineCoreClient.make_async_mp_client(")),
    Use("EngineCoreClient.make_async_mp_client", "every client it returns is an AsyncMPClient",
        _clients_are_async_mp_clients),
    Use("AsyncLLM.input_processor, model_config", "templates, and max_model_len", lambda: (
        require_sets(f"{ASYNC_LLM}.__init__", "input_processor", "model_config"),
        require_fields("vllm.config:ModelConfig", "max_model_len"))),
    Use("AsyncLLM.get_supported_tasks", "asked once by attach", lambda: (
        require_coroutine(f"{ASYNC_LLM}.get_supported_tasks"),
        require_call(f"{ASYNC_LLM}.get_supported_tasks"))),
    Use("InputProcessor.process_inputs", "validates and builds each params object's template", lambda: (
        require_call("vllm.v1.engine.input_processor:InputProcessor.process_inputs", "template", "prompt",
                     "params", supported_tasks=("generate",)),
        require_source("vllm.v1.engine.input_processor:InputProcessor._validate_prompt_len",
                       'raise VLLMValidationError(f"The {prompt_type} prompt cannot be empty")',
                       "if prompt_len > max_prompt_len:",
                       'elif prompt_len == max_prompt_len and model_config.runner_type == "generate":'))),
    Use("AsyncMPClient.call_utility_async", "Brew's engine-core method, one message per submission", lambda: [
        (require_coroutine(f"{CORE_CLIENT}:{client}.call_utility_async"),
         require_call(f"{CORE_CLIENT}:{client}.call_utility_async", "brew_add_scoring_requests",
                      b"", [], [], [], 0.0))
        for client in ("AsyncMPClient", "DPLBAsyncMPClient")]),
    Use("AsyncMPClient.abort_requests_async", "aborts by the ids the requests carry", lambda: (
        require_coroutine(f"{CORE_CLIENT}:AsyncMPClient.abort_requests_async"),
        require_call(f"{CORE_CLIENT}:AsyncMPClient.abort_requests_async", ["id"]))),
    Use("AsyncMPClient.get_output_async", "the reader task's next EngineCoreOutputs", lambda: (
        require_coroutine(f"{CORE_CLIENT}:AsyncMPClient.get_output_async"),
        require_call(f"{CORE_CLIENT}:AsyncMPClient.get_output_async"))),
    Use("AsyncMPClient.client_index", "the templates' client_index: outputs are routed back by it",
        lambda: require_sets(f"{CORE_CLIENT}:AsyncMPClient.__init__", "client_index")),
    Use("MPClient.resources.engine_dead", "check_health sees a dead engine without a request", lambda: (
        require_sets(f"{CORE_CLIENT}:MPClient.__init__", "resources"),
        require_fields(f"{CORE_CLIENT}:BackgroundResources", "engine_dead"),
        require_source(f"{CORE_CLIENT}:MPClient.start_engine_core_monitor",
                       "_self.resources.engine_dead = True", 'name="MPClientEngineMonitor"'))),
    Use("EngineCoreOutputs.outputs", "the outputs the reader resolves submissions with",
        lambda: require_fields("vllm.v1.engine:EngineCoreOutputs", "outputs")),
    Use("EngineCoreOutput", "finish_reason, stop_reason, request_id", lambda: require_fields(
        "vllm.v1.engine:EngineCoreOutput", "request_id", "finish_reason", "stop_reason")),
    Use("EngineCoreRequest", "the template's params and client_index", lambda: require_fields(
        "vllm.v1.engine:EngineCoreRequest", "sampling_params", "pooling_params", "client_index")),
)

VLLM_CORE_BATCH = (
    Use("EngineCoreRequest", "the fields build_requests sets per request", lambda: require_fields(
        "vllm.v1.engine:EngineCoreRequest", "request_id", "external_req_id", "prompt_token_ids",
        "arrival_time", "client_index")),
    Use("MsgpackEncoder, MsgpackDecoder(EngineCoreRequest)", "a template encoded once, decoded as ADD does",
        _request_template_round_trip),
    Use("EngineCore.preprocess_add_request", "the first half of the ADD path, per request", lambda: (
        require_call(f"{CORE}:EngineCore.preprocess_add_request", "request"),
        require_source(f"{CORE}:EngineCoreProc.process_input_sockets",
                       "request = self.preprocess_add_request(req)"))),
    Use("EngineCore.add_request", "the second half: add_request(*preprocess_add_request(request))", lambda: (
        require_call(f"{CORE}:EngineCore.add_request", "request", 0),
        require_source(f"{CORE}:EngineCoreProc._handle_client_request",
                       "req, request_wave = request", "self.add_request(req, request_wave)"))),
    Use("EngineCore", "gets Brew's method by setattr; has none of that name itself",
        _brew_method_name_is_free),
    Use("EngineCoreProc._handle_client_request", "a UTILITY message calls EngineCore's method of that name",
        lambda: require_source(f"{CORE}:EngineCoreProc._handle_client_request",
                               "client_idx, call_id, method_name, args = request",
                               "self._reject_utility_in_shutdown(client_idx, call_id, method_name)",
                               "(method := getattr(self, method_name))",
                               "method(*self._convert_msgspec_args(method, args))")),
    Use("EngineCoreProc._convert_msgspec_args", "Brew's arguments arrive as msgpack decoded them",
        _utility_args_reach_brew_unconverted),
    Use("EngineCore.__init__", "loads vllm.general_plugins in the engine-core process, first", lambda: (
        require_source(f"{CORE}:EngineCore.__init__", "load_general_plugins()"),
        require_source("vllm.plugins", 'DEFAULT_PLUGINS_GROUP = "vllm.general_plugins"'))),
)

VLLM_PLUGIN = (
    Use("ModelRegistry.get_supported_archs", "registers each multi-item model once",
        lambda: require_call("vllm:ModelRegistry.get_supported_archs")),
    Use("ModelRegistry.register_model", "by import path 'module:Class', imported lazily", lambda: (
        require_call("vllm:ModelRegistry.register_model", "BrewMultiItemLlamaForCausalLM",
                     "brew.engines.vllm_multi_item.model:BrewMultiItemLlamaForCausalLM"),
        require_source("vllm.model_executor.models.registry:_ModelRegistry.register_model",
                       'split_str = model_cls.split(":")'))),
    Use("register_backend", "adds BREW_MULTI_ITEM by name and dotted class path", lambda: (
        require_call("vllm.v1.attention.backends.registry:register_backend", "BREW_MULTI_ITEM",
                     "brew.engines.vllm_multi_item.attention.MultiItemAttentionBackend"),
        require_source("vllm.v1.attention.backends.registry:register_backend",
                       'backend = AttentionBackendEnum.register(backend, class_path or "")'))),
    Use("AttentionBackendEnum.__members__", "registers the backend once", _backend_registry),
)

MULTI_ITEM_ATTENTION = (
    Use("get_forward_context().additional_kwargs", "the model hands the step's rows to the backend", lambda: (
        require_call("vllm.forward_context:get_forward_context"),
        require_fields("vllm.forward_context:ForwardContext", "additional_kwargs"))),
    Use("AttentionBackend", "MultiItemAttentionBackend implements it", lambda: (
        require_implements(f"{MULTI_ITEM}.attention:MultiItemAttentionBackend", f"{BACKEND}:AttentionBackend",
                           "get_name", "get_impl_cls", "get_builder_cls", "get_supported_kernel_block_sizes",
                           "supported_kv_cache_layouts"),
        require_attrs(f"{BACKEND}:AttentionBackend", "forward_includes_kv_cache_update", "supported_dtypes",
                      "supported_kv_cache_dtypes"))),
    Use("AttentionImpl", "MultiItemAttentionImpl implements it", lambda: require_implements(
        f"{MULTI_ITEM}.attention:MultiItemAttentionImpl", f"{BACKEND}:AttentionImpl", "__init__", "forward")),
    Use("AttentionMetadataBuilder", "MultiItemAttentionMetadataBuilder implements it",
        lambda: require_implements(f"{MULTI_ITEM}.attention:MultiItemAttentionMetadataBuilder",
                                   f"{BACKEND}:AttentionMetadataBuilder", "__init__", "build")),
    Use("Attention.__init__", "builds the impl with AttentionImpl.__init__'s ten arguments, in order",
        lambda: require_source(f"{LAYER}:Attention.__init__",
                               "self.impl = impl_cls(num_heads, head_size, scale, num_kv_heads, "
                               "alibi_slopes, sliding_window, kv_cache_dtype, logits_soft_cap, attn_type, "
                               "kv_sharing_target_layer_name, **extra_impl_args,)")),
    Use("unified_kv_cache_update", "do_kv_cache_update, when the backend's forward does not write the cache",
        lambda: (require_source(f"{LAYER}:unified_kv_cache_update",
                                "attn_layer.impl.do_kv_cache_update(attn_layer, key, value, kv_cache, "
                                "layer_slot_mapping,)"),
                 require_source(f"{LAYER}:Attention.forward",
                                "not self.attn_backend.forward_includes_kv_cache_update"))),
    Use("CommonAttentionMetadata", "what the builder reads", lambda: require_fields(
        f"{BACKEND}:CommonAttentionMetadata", "num_reqs", "num_actual_tokens", "query_start_loc_cpu",
        "seq_lens", "block_table_tensor", "slot_mapping")),
    Use("AttentionType.DECODER", "the only attention the impl takes",
        lambda: require_attrs(f"{BACKEND}:AttentionType", "DECODER")),
    Use("MultipleOf", "the backend's kernel block sizes",
        lambda: require_call(f"{BACKEND}:MultipleOf", 16)),
    Use("KVCacheLayout.LBNHC", "the backend's KV cache layout",
        lambda: require_attrs("vllm.v1.kv_cache_interface:KVCacheLayout", "LBNHC")),
)

CPU_ATTN = "vllm.v1.attention.backends.cpu_attn"
MULTI_ITEM_CPU_KERNEL = (
    Use("cpu_attention_with_kv_cache", "the step's virtual causal requests in one kernel call",
        lambda: require_call("vllm._custom_ops:cpu_attention_with_kv_cache", query=None, key_cache=None,
                             value_cache=None, output=None, query_start_loc=None, seq_lens=None, scale=1.0,
                             causal=True, alibi_slopes=None, sliding_window=-1, block_table=None, softcap=0.0,
                             scheduler_metadata=None, s_aux=None)),
    Use("cpu_attn_get_scheduler_metadata", "made once per step for the virtual requests",
        lambda: require_call("vllm._custom_ops:cpu_attn_get_scheduler_metadata", num_reqs=1, num_heads=2,
                             num_kv_heads=2, head_dim=64, seq_lens=None, dtype=None, query_start_loc=None,
                             causal=True, sliding_window_size=-1, isa="vec", enable_kv_split=False)),
    Use("cpu_attn_reshape_and_cache", "writes the scratch cache in the kernel's own layout",
        lambda: require_call("vllm._custom_ops:cpu_attn_reshape_and_cache", None, None, None, None, None, "vec")),
    Use("_get_attn_isa", "the ISA both ops take, as vLLM's CPU backend picks it",
        lambda: require_call(f"{CPU_ATTN}:_get_attn_isa", None, 32, 64)),
    Use("CPUAttentionBackend.get_supported_head_sizes", "which head sizes may take the kernel",
        lambda: require_call(f"{CPU_ATTN}:CPUAttentionBackend.get_supported_head_sizes")),
    Use("the CPU backend's cache halves", "key and value caches are the third axis's halves",
        lambda: require_source(f"{CPU_ATTN}:CPUAttentionBackendImpl.forward",
                               "key_cache, value_cache = kv_cache.chunk(2, dim=2)")),
)

MULTI_ITEM_MODEL = (
    Use("Attention attributes", "the layer's backend and impl, and the settings the new impl is built from",
        lambda: (require_sets(f"{LAYER}:Attention.__init__", "attn_backend", "backend", "impl", "num_heads",
                              "head_size", "num_kv_heads", "sliding_window", "kv_cache_dtype", "attn_type",
                              "kv_sharing_target_layer_name"),
                 require_source(f"{LAYER}:Attention.__init__",
                                "self.backend = AttentionBackendEnum[self.attn_backend.get_name()]"))),
    Use("vllm.model_executor.layers.attention.Attention", "the class of the layers whose impl is swapped",
        lambda: require_attrs("vllm.model_executor.layers.attention", "Attention")),
    Use("AttentionImplBase.scale", "the new impl takes the old one's scale",
        lambda: require_annotation(f"{BACKEND}:AttentionImplBase", "scale")),
    Use("Pooler", "CandidateEndPooler implements it", lambda: require_implements(
        f"{MULTI_ITEM}.model:CandidateEndPooler", "vllm.model_executor.layers.pooler:Pooler",
        "get_supported_tasks", "get_pooling_updates", "forward")),
    Use("PoolingParamsUpdate(requires_token_ids=True)", "the pooler gets the prompt ids",
        lambda: require_call("vllm.model_executor.layers.pooler:PoolingParamsUpdate",
                             requires_token_ids=True)),
    Use("PoolingMetadata", "cursor, prompt ids, params, states", lambda: (
        require_fields(f"{POOL}:PoolingMetadata", "pooling_params", "pooling_states"),
        require_call(f"{POOL}:PoolingMetadata.get_pooling_cursor"),
        require_call(f"{POOL}:PoolingMetadata.get_prompt_token_ids_cpu"))),
    Use("PoolingCursor", "scheduled tokens, context lengths, finished mask", lambda: (
        require_fields(f"{POOL}:PoolingCursor", "num_scheduled_tokens_cpu", "seq_lens_cpu"),
        require_call(f"{POOL}:PoolingCursor.get_finished_mask"))),
    Use("PoolingStates", "hidden_states_cache kept across a request's chunks until clean()",
        _pooling_states),
    Use("LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM", "the stock models MultiItemScoring wraps",
        _stock_models_take_brews_calls),
    Use("SupportsMRoPE.get_mrope_input_positions", "per-request rows: positions and the attention rule",
        lambda: require_same_parameters(
            f"{MULTI_ITEM}.model:MultiItemScoring.get_mrope_input_positions",
            "vllm.model_executor.models.interfaces:SupportsMRoPE.get_mrope_input_positions")),
    Use("is_pooling_model, supports_mrope", "vLLM takes Brew's classes as pooling M-RoPE models",
        _brew_models_are_pooling_mrope_models),
    Use("uses_mrope", "a top-level mrope_section switches M-RoPE on",
        _top_level_mrope_section_switches_mrope_on),
)

MULTI_ITEM_REQUESTS = (
    Use("PoolingParams", "task, prefix-cache reads, label ids, FINAL_ONLY", lambda: (
        require_fields("vllm:PoolingParams", "task", "skip_reading_prefix_cache", "extra_kwargs",
                       "output_kind", "requires_token_ids"),
        _pooling_params_as_brew_builds_them())),
    Use("AsyncEngineArgs runner, hf_overrides", "engine_overrides runs the checkpoint as Brew's model",
        lambda: require_fields("vllm.engine.arg_utils:AsyncEngineArgs", "runner", "hf_overrides")),
)


# --- The tests -------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _past_the_release_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """brew.engines.vllm_engine refuses to import on any vLLM release but the
    supported one; this test is how one finds out whether another release
    would do, so it lets Brew's modules import on whichever is installed."""
    from brew.engines import vllm_version

    monkeypatch.setattr(vllm_version, "installed_vllm_version", lambda: vllm_version.SUPPORTED_VLLM)


@pytest.mark.parametrize("module", BREW_VLLM_MODULES)
def test_brew_vllm_module_imports(module: str) -> None:
    """Every name each module imports from vLLM is there (the cases below say what each is for)."""
    importlib.import_module(module)


@uses(*VLLM_ENGINE)
def test_vllm_engine_uses(use: Use) -> None:
    use.check()


@uses(*VLLM_CORE_CLIENT)
def test_vllm_core_client_uses(use: Use) -> None:
    use.check()


@uses(*VLLM_CORE_BATCH)
def test_vllm_core_batch_uses(use: Use) -> None:
    use.check()


@uses(*VLLM_PLUGIN)
def test_vllm_plugin_uses(use: Use) -> None:
    use.check()


@uses(*MULTI_ITEM_ATTENTION)
def test_multi_item_attention_uses(use: Use) -> None:
    use.check()


@uses(*MULTI_ITEM_CPU_KERNEL)
def test_multi_item_cpu_kernel_uses(use: Use) -> None:
    use.check()


@uses(*MULTI_ITEM_MODEL)
def test_multi_item_model_uses(use: Use) -> None:
    use.check()


@uses(*MULTI_ITEM_REQUESTS)
def test_multi_item_requests_uses(use: Use) -> None:
    use.check()

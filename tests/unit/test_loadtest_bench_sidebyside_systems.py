"""The systems of a side-by-side run are started with matched settings."""

from __future__ import annotations

from brew.engines import EngineKind
from loadtest.bench.sidebyside.systems import ENGINE_SYSTEMS, SYSTEMS, Endpoints, server_command


def test_vllms_server_runs_with_brews_vllm_settings(tmp_path):
    command = server_command("vllm-openai", Endpoints(8000, 9000), tmp_path / "brew-demo", tmp_path / "prompts")
    flags = " ".join(command)
    for setting in ("--dtype float32", "--enforce-eager", "--enable-prefix-caching", "--block-size 32",
                    "--served-model-name brew-demo", "--port 8000"):
        assert setting in flags
    assert "--engine torch" in " ".join(server_command("brew-torch", Endpoints(8000, 9000), tmp_path, tmp_path))


def test_every_engine_kind_is_a_system_served_by_that_engine(tmp_path):
    # The names BENCHMARKS.md reports; the baselines run last.
    assert SYSTEMS[:6] == ("brew-vllm", "brew-vllm-mis", "brew-vllm-auto", "brew-torch", "brew-torch-mis",
                           "brew-torch-auto")
    assert SYSTEMS[-2:] == ("vllm-openai", "naive")
    assert {variant.kind for variant in ENGINE_SYSTEMS.values()} == set(EngineKind)
    for system, variant in ENGINE_SYSTEMS.items():
        assert system in SYSTEMS
        command = server_command(system, Endpoints(8000, 9000), tmp_path / "model", tmp_path / "prompts")
        assert command[command.index("--engine") + 1] == variant.kind
        # Brew renders with the run's prompts, as the load generator does for vLLM's server.
        assert command[command.index("--prompts") + 1] == str(tmp_path / "prompts")
        assert command[command.index("--multi-item") + 1] == variant.multi_item.value
        # the capacity search counts a refusal as a failure, and vLLM's server refuses nothing
        assert command[command.index("--admission-target") + 1] == "deadline"


def test_multi_item_runs_as_its_own_system(tmp_path):
    for engine in ("vllm", "torch"):
        for suffix, mode in (("", "off"), ("-mis", "on"), ("-auto", "auto")):
            command = server_command(f"brew-{engine}{suffix}", Endpoints(8000, 9000), tmp_path, tmp_path)
            assert command[command.index("--engine") + 1] == engine
            assert command[command.index("--multi-item") + 1] == mode


def test_a_brew_system_over_http_is_the_same_server_with_its_http_port(tmp_path):
    from loadtest.bench.sidebyside.systems import CHOICES, HTTP_SYSTEMS, QUANTIZED_SYSTEMS, over_http

    assert "brew-vllm-http" in HTTP_SYSTEMS and "brew-torch-http" in HTTP_SYSTEMS
    assert not set(HTTP_SYSTEMS) & set(SYSTEMS) and set(CHOICES) == {*SYSTEMS, *HTTP_SYSTEMS, *QUANTIZED_SYSTEMS}
    assert over_http("brew-vllm-http") and not over_http("brew-vllm") and not over_http("vllm-openai")
    endpoints = Endpoints(8000, 9000, 8080)
    command = server_command("brew-vllm-http", endpoints, tmp_path, tmp_path)
    assert command == [*server_command("brew-vllm", endpoints, tmp_path, tmp_path), "--http-port", "8080"]


def test_a_quantized_system_serves_the_quantized_checkpoint_or_quantizes_at_load(tmp_path):
    from loadtest.bench.sidebyside.systems import QUANTIZED_SYSTEMS, needs_quantized_model

    assert {"brew-vllm+int8-w8a8", "brew-torch+int8-w8a8", "brew-torch+int8-dynamic"} <= set(QUANTIZED_SYSTEMS)
    assert "brew-vllm+int8-dynamic" not in QUANTIZED_SYSTEMS  # vLLM does not quantize to int8 at load
    assert not any(system.startswith("naive") for system in QUANTIZED_SYSTEMS)
    endpoints = Endpoints(8000, 9000, 8080)
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert needs_quantized_model("brew-vllm+int8-w8a8") and not needs_quantized_model("brew-torch+int8-weight")
    assert server_command("brew-vllm+int8-w8a8", endpoints, fp32, tmp_path, int8) == server_command(
        "brew-vllm", endpoints, int8, tmp_path)
    assert server_command("brew-torch+int8-dynamic", endpoints, fp32, tmp_path, int8) == [
        *server_command("brew-torch", endpoints, fp32, tmp_path), "--quantization", "int8-dynamic"]

"""Server configuration: file, then flags; every invalid setting is refused
at start with a message that says how to fix it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from brew import defaults
from brew.engines import EngineKind
from brew.engines.multi_item_rule import MultiItemMode, PackingRule
from brew.engines.options import TorchOptions, VllmOptions
from serving.config import (
    BatchingConfig,
    ClusterConfig,
    ConfigError,
    HashPolicy,
    Limits,
    ServerConfig,
    SupervisorConfig,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_and_no_flags_give_the_defaults():
    config = load_config()
    assert config.engine is EngineKind.VLLM
    assert config.model == defaults.DEMO_MODEL_DIR and config.prompts == defaults.PROMPTS_DIR
    assert (config.host, config.port, config.metrics_port) == ("127.0.0.1", 50051, 9400)
    assert config.batching == BatchingConfig() and config.limits == Limits()
    assert config.auth_token is None and config.vllm == VllmOptions() and config.torch == TorchOptions()
    assert config.multi_item is MultiItemMode.AUTO and config.packing == PackingRule()
    assert load_config(engine="naive").multi_item is MultiItemMode.AUTO  # auto on an engine that cannot pack: off


def test_the_example_file_loads(monkeypatch):
    monkeypatch.chdir(REPO)  # its paths are relative to the working directory
    config = load_config(REPO / "examples" / "server.toml")
    assert config.engine is EngineKind.VLLM and config.model == Path("brew/demo/brew-demo")
    assert config.batching == BatchingConfig(max_batch_candidates=256, collect_window_ms=4,
                                            max_queue_candidates=4096, max_inflight_batches=2)
    assert config.limits == Limits(1024, 8, 1000)
    assert config.vllm == VllmOptions(kv_cache_gib=1.0)


def test_flags_override_the_file_key_by_key(tmp_path):
    path = write_toml(tmp_path, 'engine = "torch"\n[server]\nport = 6000\nslo_ms = 250\n'
                                "[batching]\ncollect_window_ms = 10\nmax_queue_candidates = 2048\n")
    config = load_config(path, port=7000, host=None, engine=None,
                         batching={"max_batch_candidates": 64, "max_queue_candidates": None})
    assert config.engine is EngineKind.TORCH  # a flag left out (None) keeps the file's value
    assert (config.port, config.slo_ms, config.slo_seconds) == (7000, 250, 0.25)
    assert config.batching == BatchingConfig(max_batch_candidates=64, collect_window_ms=10,
                                            max_queue_candidates=2048, max_inflight_batches=2)


def test_paths_become_paths():
    config = load_config(model=str(defaults.DEMO_MODEL_DIR), prompts=str(defaults.PROMPTS_DIR))
    assert config.model == defaults.DEMO_MODEL_DIR and isinstance(config.prompts, Path)


def test_the_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_config().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "/nonexistent"},
         "model /nonexistent is not a checkpoint directory (no config.json); pass --model DIR"),
        ({"prompts": "/nonexistent"}, "prompts /nonexistent is not a directory; pass --prompts DIR"),
        ({"port": 70000}, "port must be in 0..65535 (0 picks a free one), got 70000"),
        ({"metrics_port": -1}, "metrics_port must be in 0..65535 (0 picks a free one), got -1"),
        ({"port": 9400}, "port and metrics_port are both 9400; give metrics its own port"),
        ({"http_port": 50051}, "port and http_port are both 50051; give HTTP its own port"),
        ({"http_port": 70000}, "http_port must be in 0..65535 (0 picks a free one), got 70000"),
        ({"slo_ms": 0}, "slo_ms must be > 0, got 0"),
        ({"grace_seconds": -1.0}, "grace_seconds must be > 0, got -1.0"),
        ({"max_message_bytes": 100}, "max_message_bytes must be >= 1024, got 100"),
        ({"tls_key": "/nonexistent.key"}, "TLS needs both tls_cert and tls_key (or neither)"),
        ({"auth_token": ""}, "auth_token is empty; give a token or leave it out"),
        ({"batching": {"max_batch_candidates": 0}}, "batching.max_batch_candidates must be >= 1, got 0"),
        ({"batching": {"collect_window_ms": -2}},
         "batching.collect_window_ms must be >= 0, got -2"),
        ({"batching": {"max_queue_candidates": 100}},
         "batching.max_queue_candidates (100) must be at least max_batch_candidates (256)"),
        ({"batching": {"max_inflight_batches": 0}}, "batching.max_inflight_batches must be >= 1, got 0"),
        ({"limits": {"max_tasks_per_request": 0}}, "limits.max_tasks_per_request must be >= 1, got 0"),
        ({"limits": {"max_candidates_per_request": 5000}},
         "limits.max_candidates_per_request (5000) exceeds batching.max_queue_candidates (4096)"),
        ({"replica_name": "zoë"}, "replica_name 'zoë' must be non-empty printable ASCII (it is a gRPC header)"),
        ({"cluster": {"replicas": 0}}, "cluster.replicas must be >= 1, got 0"),
        ({"cluster": {"first_replica_port": 65535}},
         "cluster.first_replica_port=65535 does not give every replica a TCP port (0-65535)"),
        ({"cluster": {"envoy_stats_port": 9901}},
         "cluster.envoy_admin_port (9901) and cluster.envoy_stats_port (9901) share ports; move one"),
        ({"cluster": {"first_replica_metrics_port": 9900, "replicas": 3}},
         "cluster.first_replica_metrics_port (9900) and cluster.envoy_admin_port (9901) share ports"),
        ({"cluster": {"health_check_interval_seconds": 0}}, "cluster.health_check_interval_seconds must be > 0"),
        ({"cluster": {"retries": -1}}, "cluster.retries must be >= 0 (0: Envoy never retries), got -1"),
        ({"cluster": {"replicas_dns": " "}}, "cluster.replicas_dns is empty"),
        ({"cluster": {"hash_balance_factor": 50}}, "cluster.hash_balance_factor must be 0 (off) or at least 100"),
        ({"cluster": {"hash_policy": "random"}}, "cluster.hash_policy 'random' is not one of ['ring_hash', 'maglev']"),
        ({"multi_item": "on", "engine": "naive"}, "multi_item: engine naive has no multi-item scoring"),
        ({"multi_item": True}, "multi_item True is not one of ['off', 'on', 'auto']"),
        ({"packing": {"max_candidate_share": 2.0}}, "packing.max_candidate_share must be in 0..1, got 2.0"),
        ({"dtype": "float8"}, "dtype must be one of float32, bfloat16, float16, auto, got 'float8'"),
        ({"engine": "torch", "multi_item": "off", "torch": {"compile": True}},
         "torch.compile compiles the torch engine's packed passes: use engine torch with multi_item on"),
    ],
)
def test_an_invalid_setting_is_named_with_the_fix(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(**overrides)
    assert message in str(caught.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_config(port=70000, slo_ms=0, tls_cert="/nonexistent.pem")
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid server configuration:"
    assert len(lines) == 5 and all(line.startswith("  - ") for line in lines[1:])
    assert "tls_cert /nonexistent.pem does not exist" in lines[-1]


def test_tls_with_both_files_is_accepted(tmp_path):
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    config = load_config(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem", auth_token="s3cret")
    assert config.tls_cert == tmp_path / "c.pem" and config.auth_token == "s3cret"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("color = 1\n", "config file: unknown key(s) ['color']; known: ['batching', 'cluster', 'device'"),
        ("[server]\nmodel = 'x'\n", "config file [server]: unknown key(s) ['model']; known: ['auth_token'"),
        ("[vllm]\nswap_space = 4\n", "config file [vllm]: unknown key(s) ['swap_space']; known: ['block_size'"),
        ("[server\nport = 1\n", "cannot read config file"),
    ],
)
def test_a_bad_file_is_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write_toml(tmp_path, text))
    assert message in str(caught.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*missing.toml"):
        load_config(tmp_path / "missing.toml")


def test_engine_options_are_typed_and_importable_without_vllm(tmp_path):
    # The config's [vllm] and [torch] sections become the engines' own option types...
    config = load_config(write_toml(tmp_path, "[vllm]\nmax_num_seqs = 64\n[torch]\nmax_forward_candidates = 8\n"))
    assert config.vllm == VllmOptions(max_num_seqs=64) and config.torch == TorchOptions(max_forward_candidates=8)
    # ...and building them never imports vLLM (seconds to import, maybe not installed).
    probe = "import sys, serving.config, brew.engines.options; print('vllm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"


def test_server_config_validates_when_built_directly():
    with pytest.raises(ConfigError, match=r"port must be in 0..65535 \(0 picks a free one\), got -5"):
        ServerConfig(port=-5)


def test_a_setting_of_the_wrong_type_is_named(tmp_path):
    # Regression: the message was "'<=' not supported between instances of 'int' and 'str'".
    with pytest.raises(ConfigError) as caught:
        load_config(write_toml(tmp_path, '[server]\nport = "50051"\n'))
    assert "port must be an integer, got '50051'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[batching]\nmax_batch = 8\n",
         "config file [batching]: unknown key(s) ['max_batch']; known: ['admission_target', 'collect_window_ms'"),
        ("[limits]\nmax_tasks = 2\n",
         "config file [limits]: unknown key(s) ['max_tasks']; known: ['max_candidates_per_request'"),
        ("[cluster]\nreplica = 2\n", "config file [cluster]: unknown key(s) ['replica']; known: ['envoy_admin_port'"),
    ],
)
def test_an_unknown_key_of_a_section_lists_the_known_ones(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write_toml(tmp_path, text))
    assert message in str(caught.value)


def test_the_cluster_section_loads_from_the_file_with_flags_on_top(tmp_path):
    path = write_toml(tmp_path, '[cluster]\nreplicas = 4\nhash_policy = "maglev"\nenvoy_port = 6000\n'
                                'replicas_dns = "brew-replicas.brew.svc.cluster.local"\n')
    config = load_config(path, cluster={"envoy_port": 7000, "replicas": None})
    assert config.cluster == ClusterConfig(replicas=4, hash_policy=HashPolicy.MAGLEV, envoy_port=7000,
                                           replicas_dns="brew-replicas.brew.svc.cluster.local")
    assert load_config().cluster == ClusterConfig() and load_config().replica_name is None
def test_admission_supervisor_and_default_deadline_settings_load_from_the_file(tmp_path):
    path = write_toml(tmp_path, "[server]\ndefault_deadline_seconds = 2.5\n"
                                "[batching]\ntarget_queue_delay_ms = 40\n"
                                "[supervisor]\nmax_failures = 3\ninitial_backoff_seconds = 0.5\n")
    config = load_config(path)
    assert config.default_deadline_seconds == 2.5
    assert config.batching.target_queue_delay_ms == 40
    assert (config.supervisor.max_failures, config.supervisor.initial_backoff_seconds) == (3, 0.5)
    assert config.supervisor.probe_interval_seconds == SupervisorConfig().probe_interval_seconds


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"default_deadline_seconds": 0}, "default_deadline_seconds must be > 0, got 0"),
        ({"batching": {"target_queue_delay_ms": 0}},
         "batching.target_queue_delay_ms must be > 0, got 0"),
        ({"supervisor": {"max_failures": 0}}, "supervisor.max_failures must be >= 1, got 0"),
        ({"supervisor": {"initial_backoff_seconds": 5.0, "max_backoff_seconds": 1.0}},
         "supervisor.max_backoff_seconds (1.0) must be at least initial_backoff_seconds (5.0)"),
        ({"supervisor": {"probe_interval_seconds": "1"}},
         "supervisor.probe_interval_seconds must be a number"),
    ],
)
def test_an_invalid_overload_or_supervisor_setting_is_named(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, **overrides)
    assert message in str(caught.value)


def test_the_torch_attention_kernel_is_a_setting_checked_at_load(tmp_path):
    config = load_config(write_toml(tmp_path, '[torch]\nattention = "flex_attention"\n'))
    assert config.torch.attention == "flex_attention"
    with pytest.raises(ConfigError, match=r"torch.attention must be one of sdpa, eager, flex_attention, got 'flash'"):
        load_config(write_toml(tmp_path, '[torch]\nattention = "flash"\n'))

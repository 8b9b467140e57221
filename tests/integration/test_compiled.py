"""The compiled packed pass (`[torch] compile`) gives the naive engine's scores.

`torch.compile` over shapes padded to `bucket_tokens` (brew.engines.compiled)
must change nothing but speed: the pads attend only to themselves and no
real token sees them. On CPU the compile runs in inductor's C++ backend;
a small bucket keeps the compiled shapes few and the test short. The same
check runs on CUDA (CUDA graphs) in test_gpu_parity.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from parity_groups import GROUPS, PARITY_TOLERANCE, max_gap
from tiny_model import build_tiny_llama

from brew.engines import EngineKind, create_engine
from brew.engines.options import TorchOptions

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference(model_dir):
    engine = await create_engine(EngineKind.NAIVE, model_dir)
    try:
        yield await engine.score(GROUPS)
    finally:
        await engine.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_compiled_packed_passes_match_the_naive_engine(model_dir, reference):
    options = TorchOptions(compile=True, bucket_tokens=256, max_batch_tokens=4096)
    engine = await create_engine(EngineKind.TORCH, model_dir, multi_item="on", torch=options)
    try:
        first = await engine.score(GROUPS)
        again = await engine.score(GROUPS)  # the same shapes: the compiled code is reused
    finally:
        await engine.close()
    assert max_gap(first, reference) < PARITY_TOLERANCE
    assert max_gap(again, reference) < PARITY_TOLERANCE

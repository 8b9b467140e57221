"""Session-wide setup shared by every test directory.

gRPC's asyncio layer keeps one process-wide completion queue, polled by a
thread, and shuts it down when the last aio object is collected. Tests run
each on its own event loop; a channel or server collected after its loop has
closed makes that shutdown join the poller thread, which can then wait
forever (grpc/grpc#22365, #40989): the run hangs in a later test or at exit.
Holding one reference for the whole session, as the gRPC maintainers
suggest, keeps the queue up until the interpreter exits.

The stages run in order, unit tests first, and a failed unit test stops the
run before the integration and e2e tests (tests/stages.py).
"""

from __future__ import annotations

import pytest
from grpc import aio
from stages import StageOrder

aio.init_grpc_aio()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(StageOrder(), "brew-stages")

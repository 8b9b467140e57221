"""`brew serve` whose torch engines all fail their health check: a crash loop.

Every engine starts and warms up, then the watchdog's check fails, and so
does the check of every replacement. Used by test_engine_restart.py as
`python broken_engine_serve.py serve --engine torch ...`.
"""

from __future__ import annotations

import sys

from brew.cli import main
from brew.engines.torch_engine import TorchEngine


async def _dead_device(self: TorchEngine) -> None:
    raise RuntimeError("simulated dead device")


if __name__ == "__main__":
    TorchEngine.check_health = _dead_device  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))

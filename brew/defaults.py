"""Where the bundled demo lives; every command takes flags to point elsewhere."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_MODEL_DIR = PACKAGE_DIR / "demo" / "brew-demo"
PROMPTS_DIR = PACKAGE_DIR.parent / "prompts"
EXAMPLE_REQUEST = PACKAGE_DIR.parent / "examples" / "request.json"

"""The checked-in brew/v1 code is what proto/generate.py makes of the proto
today: regenerate into a temporary directory and compare byte for byte."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = REPO / "brew" / "v1"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated_files(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "brew" / "v1").iterdir())}


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_generator()


def test_the_generated_code_is_fresh(generator, tmp_path):
    generator.generate(tmp_path)
    fresh = generated_files(tmp_path)
    assert sorted(fresh) == ["ranking_pb2.py", "ranking_pb2.pyi", "ranking_pb2_grpc.py"]
    checked_in = {name: (CHECKED_IN / name).read_bytes() for name in fresh}
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"brew/v1/{stale} are stale: run `python proto/generate.py` and commit the result"


def test_every_checked_in_module_is_generated(generator, tmp_path):
    generator.generate(tmp_path)
    python_files = {path.name for path in CHECKED_IN.glob("*.py*")} - {"__init__.py"}
    assert python_files == set(generated_files(tmp_path))


def test_a_changed_proto_is_detected(generator, tmp_path, monkeypatch):
    # The comparison above can fail: a proto with one more field gives other code.
    proto_root = tmp_path / "proto"
    shutil.copytree(REPO / "proto" / "brew", proto_root / "brew")
    proto = proto_root / "brew" / "v1" / "ranking.proto"
    text = proto.read_text(encoding="utf-8")
    assert "string model = 2;\n}" in text  # the end of ListTasksResponse
    proto.write_text(text.replace("string model = 2;\n}", "string model = 2;\n  string extra = 3;\n}"),
                     encoding="utf-8")
    monkeypatch.setattr(generator, "PROTO_ROOT", proto_root)
    generator.generate(tmp_path / "out")
    changed = generated_files(tmp_path / "out")
    assert changed["ranking_pb2.py"] != (CHECKED_IN / "ranking_pb2.py").read_bytes()
    assert b"extra" in changed["ranking_pb2.pyi"]

"""The README's Python example runs as written.

The first ```python block under the README's "A first call" heading is run,
unchanged, as its own process from the repository root against a real
`brew serve` (torch engine, free ports), with the server's address as its
argument. It must print one sensible score per candidate of
examples/request.json, and a call that fails must end it with the status code.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serve_process import running_serve

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
HEADING = "## A first call"
RUN_TIMEOUT_SECONDS = 60


def readme_example(markdown: str) -> str:
    """The first ```python block after HEADING, within that section."""
    start = markdown.index(HEADING)
    end = markdown.find("\n## ", start + len(HEADING))
    section = markdown[start:] if end == -1 else markdown[start:end]
    found = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert found is not None, f"no ```python block under {HEADING!r} in README.md"
    return found.group(1)


def run_example(tmp_path: Path, target: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "first_call.py"
    script.write_text(readme_example((REPO / "README.md").read_text(encoding="utf-8")), encoding="utf-8")
    return subprocess.run([sys.executable, str(script), target], cwd=REPO, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)


def example_candidates() -> list[tuple[str, str]]:
    """(task, item id) of every candidate of examples/request.json, in request order."""
    request = json.loads((REPO / "examples" / "request.json").read_text(encoding="utf-8"))
    return [(task["task"], item["itemId"]) for task in request["tasks"] for item in task["candidates"]]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_serve(tmp_path_factory.mktemp("serve")) as running:
        yield running


def test_the_example_prints_one_probability_per_candidate(server, tmp_path):
    completed = run_example(tmp_path, server.target)
    assert completed.returncode == 0, completed.stderr
    printed = [line.split() for line in completed.stdout.splitlines() if line.strip()]
    assert [(task, item) for task, item, _ in printed] == example_candidates()
    scores = [float(score) for _, _, score in printed]
    assert all(0.0 <= score <= 1.0 for score in scores), scores
    assert len(set(scores)) > 1, f"every candidate got the same score: {scores}"


def test_a_failed_call_ends_the_example_with_its_status_code(tmp_path):
    completed = run_example(tmp_path, f"127.0.0.1:{unused_port()}")  # nothing listens there
    assert completed.returncode != 0
    assert completed.stdout == ""
    assert any(line.startswith("UNAVAILABLE: ") for line in completed.stderr.splitlines()), completed.stderr


def test_the_extraction_takes_the_first_python_block_of_the_section():
    markdown = ("# T\n```python\nnot this\n```\n## A first call\ntext\n```bash\nb\n```\n"
                "```python\nthis\n```\n```python\nnor this\n```\n## Next\n")
    assert readme_example(markdown) == "this\n"
    with pytest.raises(AssertionError):
        readme_example("## A first call\n```bash\nb\n```\n## Next\n```python\nlater\n```\n")

"""The order of a test run (tests/stages.py, registered by tests/conftest.py):
unit tests first, and after a unit failure no integration or e2e test. The
plugin runs on small trees, by pytester, with this repository's pytest
settings; this session checks that tests/conftest.py registered it."""

from __future__ import annotations

from pathlib import Path

import pytest
from stages import UNIT_FAILED, StageOrder, stage_of

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

PASS = "def test_passes():\n    pass\n"

# tests/conftest.py's registration of the plugin, without its gRPC set-up
# (which wants the main thread's event loop, gone once an asyncio test ran).
CONFTEST = """import pytest
from stages import StageOrder


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(StageOrder(), "brew-stages")
"""


@pytest.fixture
def tree(pytester: pytest.Pytester) -> pytest.Pytester:
    """pyproject.toml (the pytest settings), tests/stages.py and the
    plugin's registration, without tests."""
    write(pytester, {"pyproject.toml": (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                     "tests/stages.py": (ROOT / "tests" / "stages.py").read_text(encoding="utf-8"),
                     "tests/conftest.py": CONFTEST})
    return pytester


def write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = pytester.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def run(pytester: pytest.Pytester) -> tuple[pytest.RunResult, list[str]]:
    """Run the tree as the README does (`pytest`, from the top); the result
    and the node ids of the tests that ran, in order."""
    # without Hypothesis' plugin, which would import all of Hypothesis again at each run (a second each)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    reports = result.reprec.getreports("pytest_runtest_logreport")  # setup, call and teardown of each
    ran = list(dict.fromkeys(report.nodeid for report in reports))
    return result, ran


def test_unit_tests_run_first_then_integration_then_e2e_in_file_order(tree):
    write(tree, {
        "tests/e2e/test_b.py": PASS,  # collected first by name: e2e < integration < unit
        "tests/integration/test_c.py": PASS,
        "tests/unit/test_z.py": PASS,
        "tests/unit/test_a.py": "def test_second():\n    pass\n\n\ndef test_first():\n    pass\n",
    })
    result, ran = run(tree)
    assert ran == ["tests/unit/test_a.py::test_second", "tests/unit/test_a.py::test_first",
                   "tests/unit/test_z.py::test_passes", "tests/integration/test_c.py::test_passes",
                   "tests/e2e/test_b.py::test_passes"]
    result.assert_outcomes(passed=5)
    assert UNIT_FAILED not in result.stdout.str()


def test_a_failed_unit_test_stops_the_run_after_the_unit_stage(tree):
    write(tree, {
        "tests/e2e/test_b.py": PASS,
        "tests/integration/test_c.py": PASS,
        "tests/unit/test_a.py": "def test_fails():\n    assert 1 == 2\n\n\n" + PASS,
    })
    result, ran = run(tree)
    # every unit test runs, none of the later stages
    assert ran == ["tests/unit/test_a.py::test_fails", "tests/unit/test_a.py::test_passes"]
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*! {UNIT_FAILED} !*"])


def test_a_unit_setup_error_stops_the_run_too(tree):
    write(tree, {
        "tests/e2e/test_b.py": PASS,
        "tests/unit/test_a.py": ("import pytest\n\n\n@pytest.fixture\ndef broken():\n"
                                 "    raise RuntimeError('no')\n\n\ndef test_errors(broken):\n    pass\n"),
    })
    result, ran = run(tree)
    assert ran == ["tests/unit/test_a.py::test_errors"]
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*! {UNIT_FAILED} !*"])


def test_an_expected_unit_failure_stops_nothing(tree):
    write(tree, {
        "tests/e2e/test_b.py": PASS,
        "tests/unit/test_a.py": ("import pytest\n\n\n@pytest.mark.xfail(strict=True)\ndef test_known():\n"
                                 "    assert False\n"),
    })
    result, ran = run(tree)
    assert ran == ["tests/unit/test_a.py::test_known", "tests/e2e/test_b.py::test_passes"]
    result.assert_outcomes(passed=1, xfailed=1)
    assert UNIT_FAILED not in result.stdout.str()


def test_a_failure_in_a_later_stage_stops_nothing(tree):
    write(tree, {
        "tests/e2e/test_b.py": PASS,
        "tests/integration/test_c.py": "def test_fails():\n    assert False\n",
        "tests/unit/test_a.py": PASS,
    })
    result, ran = run(tree)
    assert ran == ["tests/unit/test_a.py::test_passes", "tests/integration/test_c.py::test_fails",
                   "tests/e2e/test_b.py::test_passes"]
    result.assert_outcomes(passed=2, failed=1)
    assert UNIT_FAILED not in result.stdout.str()


def test_the_repository_conftest_registers_the_plugin(pytestconfig):
    assert isinstance(pytestconfig.pluginmanager.get_plugin("brew-stages"), StageOrder)
    assert CONFTEST.split("\n\n\n")[1] in (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")


def test_this_run_takes_the_stages_in_order(request):
    """The session running this test: every collected unit test before any
    integration test, every integration test before any e2e test."""
    stages = [stage_of(item.path) for item in request.session.items]
    assert stages == sorted(stages)

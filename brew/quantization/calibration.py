"""The prompts a quantized checkpoint is calibrated on: requests verbalized
by the serving path (brew.verbalize), so the activations measured are the
ones the model meets when it serves.

By default the prompts directory's own examples (`<prompts>/examples/*.json`,
the requests `brew prompts lint` renders); or a JSONL file of requests in
the proto's JSON mapping, one per line, as `brew batch` reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from brew.errors import BrewError
from brew.model_limits import max_model_len
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto


class CalibrationError(BrewError):
    """The calibration requests cannot be read or verbalized; the message
    names the file and line."""

    reason = "calibration"


def request_texts(prompts_dir: Path, calibration: Path | None) -> Iterator[tuple[str, str]]:
    """(where, JSON text) of every calibration request: the lines of
    `calibration`, or the prompts directory's example files."""
    if calibration is not None:
        try:
            lines = calibration.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise CalibrationError(f"--calibration {calibration}: {error.strerror}") from None
        yield from ((f"{calibration}:{number}", line) for number, line in enumerate(lines, 1) if line.strip())
        return
    examples = sorted((prompts_dir / "examples").glob("*.json"))
    if not examples:
        raise CalibrationError(f"{prompts_dir}/examples has no *.json requests; pass --calibration FILE.jsonl")
    yield from ((str(path), path.read_text(encoding="utf-8")) for path in examples)


def calibration_prompts(model_dir: Path, prompts_dir: Path,
                        calibration: Path | None = None) -> list[tuple[int, ...]]:
    """Every candidate prompt (prefix + candidate block, as the model reads
    it) of the calibration requests, for the checkpoint's tokenizer."""
    tokenizer = PromptTokenizer.from_pretrained(model_dir)
    verbalizer = Verbalizer(load_tasks(prompts_dir), tokenizer, max_model_len(model_dir))
    prompts: list[tuple[int, ...]] = []
    for where, text in request_texts(prompts_dir, calibration):
        try:
            request = request_from_proto(parse_request_json(text))
            for index, task in enumerate(request.tasks):
                group = verbalizer.prepare(request.member, task, index).group
                prompts.extend(group.prompt_ids(i) for i in range(group.num_candidates))
        except (BrewError, ValueError) as error:
            raise CalibrationError(f"{where}: {error}") from None
    if not prompts:
        raise CalibrationError("the calibration requests hold no candidates")
    return prompts

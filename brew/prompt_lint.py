"""Check a prompts directory before it is served: `brew prompts lint`.

Each check is one small function that returns findings (error or warning,
with the file and, where one exists, the line). Errors are what would break
serving or silently mis-score: a template that does not compile, a field the
example data lacks, a label word that is not one token, candidate data in the
shared prefix, a text before the answer that merges with the label token, a
worst-case prompt longer than the model accepts. Warnings are choices that
cost money or accuracy: a per-request value in the shared prefix (every
request misses the prefix cache), member data repeated in every candidate
block, a candidate block that ends with data instead of a fixed answer cue,
an example entity type that a block branching on `entity_type` has no branch
for (it falls through to the generic one).

Rendering checks go through the serving path (`Verbalizer`) on the example
requests in `prompts/examples/*.json` (the proto's JSON mapping, the same
format `brew score` reads), so lint renders exactly what serving would.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import jinja2

from brew.errors import BrewError, InvalidRequestError, PromptTooLongError, TaskConfigError, TemplateFieldError
from brew.tasks import EXAMPLES_DIR, Task, TaskRegistry, load_task, prompt_files
from brew.template_ast import block_sources, branches, first_output, last_text, references, written_references
from brew.templates import make_environment, template_lines
from brew.tokenization import PromptTokenizer
from brew.types import Item, Member, TaskRequest
from brew.verbalize import HistoryOutcome, Verbalizer, culprit
from brew.wire import parse_request_json, request_from_proto



class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem, where it is, and how bad."""

    severity: Severity
    check: str
    path: Path
    line: int | None
    message: str

    def format(self, relative_to: Path | None = None) -> str:
        path = self.path
        if relative_to is not None and path.is_absolute() and path.is_relative_to(relative_to):
            path = path.relative_to(relative_to)
        where = f"{path}:{self.line}" if self.line else f"{path}"
        return f"{where}: {self.severity.value}: [{self.check}] {self.message}"


@dataclass(frozen=True)
class Example:
    """One (member, task request) of an example file; `index` is the task's
    place in the file's `tasks`."""

    path: Path
    member: Member
    request: TaskRequest
    index: int = 0


@dataclass(frozen=True)
class Subject:
    """What every check of one task gets: the task, its files, its examples,
    the tokenizer and the model's maximum length."""

    task: Task
    config_path: Path
    template_path: Path
    environment: jinja2.Environment
    examples: tuple[Example, ...]
    tokenizer: PromptTokenizer
    max_model_len: int

    def finding(self, severity: Severity, check: str, message: str, path: Path | None = None,
                line: int | None = None) -> Finding:
        return Finding(severity, check, path or self.template_path, line, f"task {self.task.name}: {message}")

    def verbalizer(self) -> Verbalizer:
        """A verbalizer over this task alone, so another task's bad labels do
        not stop this one's checks."""
        return Verbalizer(TaskRegistry({self.task.name: self.task}), self.tokenizer, self.max_model_len)


Check = Callable[[Subject], list[Finding]]


# --- loading ------------------------------------------------------------------------

def lint_prompts(prompts_dir: Path, tokenizer: PromptTokenizer, max_model_len: int) -> list[Finding]:
    """Every finding for a prompts directory, tasks in name order."""
    files = prompt_files(prompts_dir)
    configs, partials = files.configs, files.partials
    if not configs:
        return [Finding(Severity.ERROR, "config", prompts_dir, None, "no task configs (*.toml) here")]
    environment = make_environment(prompts_dir)
    findings = check_partials_compile(environment, partials)
    examples, example_findings = load_examples(prompts_dir / EXAMPLES_DIR)
    findings += example_findings
    for config_path in configs:
        try:
            task = load_task(config_path, environment, partials)
        except TaskConfigError as error:
            findings.append(_config_finding(config_path, error))
            continue
        subject = Subject(
            task=task,
            config_path=config_path,
            template_path=prompts_dir / task.template.name,
            environment=environment,
            examples=tuple(e for e in examples if e.request.task == task.name),
            tokenizer=tokenizer,
            max_model_len=max_model_len,
        )
        findings += lint_task(subject)
    findings += check_orphan_templates(prompts_dir, configs)
    return _unique(findings)


def lint_task(subject: Subject) -> list[Finding]:
    """Static checks always; the other rendering checks once every example
    renders (they compare renders, so they need them)."""
    findings = [finding for check in STATIC_CHECKS for finding in check(subject)]
    if any(f.severity is Severity.ERROR for f in findings):
        return findings
    findings += check_fields(subject)
    if any(f.severity is Severity.ERROR for f in findings):
        return findings
    return findings + [finding for check in RENDER_CHECKS for finding in check(subject)]


def load_examples(examples_dir: Path) -> tuple[list[Example], list[Finding]]:
    """Every (member, task request) of `examples/*.json`."""
    examples: list[Example] = []
    findings: list[Finding] = []
    for path in sorted(examples_dir.glob("*.json")):
        try:
            request = request_from_proto(parse_request_json(path.read_text(encoding="utf-8")))
        except InvalidRequestError as error:
            findings.append(Finding(Severity.ERROR, "examples", path, None, str(error)))
            continue
        examples += [Example(path, request.member, task, index) for index, task in enumerate(request.tasks)]
    return examples, findings


def _config_finding(config_path: Path, error: TaskConfigError) -> Finding:
    cause = error.__cause__
    if isinstance(cause, jinja2.TemplateSyntaxError):
        path = Path(cause.filename) if cause.filename else config_path.with_suffix(".jinja")
        return Finding(Severity.ERROR, "syntax", path, cause.lineno, f"{cause.message}")
    line = None
    if isinstance(cause, tomllib.TOMLDecodeError):
        match = re.search(r"at line (\d+)", str(cause))
        line = int(match.group(1)) if match else None
    return Finding(Severity.ERROR, "config", config_path, line, str(error).removeprefix(f"{config_path}: "))


def _unique(findings: Sequence[Finding]) -> list[Finding]:
    """A broken partial fails every task that includes it: report it once."""
    seen: set[tuple[object, ...]] = set()
    unique = []
    for finding in findings:
        key = (finding.path, finding.line, finding.check, finding.message)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def _toml_line(path: Path, key: str) -> int | None:
    """The line a TOML key is written on, for findings about its value."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


# --- directory checks ---------------------------------------------------------------

def check_partials_compile(environment: jinja2.Environment, partials: Sequence[Path]) -> list[Finding]:
    """Shared partials compile on their own (a task that includes a broken one
    reports the same place)."""
    findings = []
    for path in partials:
        try:
            environment.get_template(path.name)
        except jinja2.TemplateSyntaxError as error:
            findings.append(Finding(Severity.ERROR, "syntax", Path(error.filename or path), error.lineno, error.message or ""))
    return findings


def check_orphan_templates(prompts_dir: Path, configs: Sequence[Path]) -> list[Finding]:
    """A task template without a config is never loaded; a typo is likely."""
    used = set()
    for config in configs:
        try:
            used.add(str(tomllib.loads(config.read_text(encoding="utf-8")).get("template", f"{config.stem}.jinja")))
        except tomllib.TOMLDecodeError:
            used.add(f"{config.stem}.jinja")
    return [
        Finding(Severity.WARNING, "config", path, None,
                "no task config uses this template; add a .toml, or name it _*.jinja if it is a partial")
        for path in sorted(prompts_dir.glob("*.jinja"))
        if not path.name.startswith("_") and path.name not in used
    ]


# --- static checks (no rendering) ---------------------------------------------------

def check_labels(subject: Subject) -> list[Finding]:
    """Label words are single, distinct tokens of the model's tokenizer."""
    findings = []
    try:
        subject.tokenizer.label_ids(subject.task.name, subject.task.labels)
    except TaskConfigError as error:
        findings.append(Finding(Severity.ERROR, "labels", subject.config_path,
                                _toml_line(subject.config_path, "words"), str(error)))
    for word in subject.task.labels:
        if word and not word[0].isspace():
            findings.append(subject.finding(
                Severity.WARNING, "labels",
                f"label {word!r} has no leading space: the candidate block is right-stripped, so the "
                f"answer follows its last character directly (e.g. 'answer:{word.strip()}'); "
                f"labels usually read {' ' + word!r}",
                subject.config_path, _toml_line(subject.config_path, "words")))
    return findings


def check_examples_exist(subject: Subject) -> list[Finding]:
    """Field checks need data: every task needs at least one example request."""
    if subject.examples:
        return []
    return [subject.finding(
        Severity.ERROR, "examples",
        f"no example request has candidates for this task; add {EXAMPLES_DIR}/{subject.task.name}.json "
        f"(a ScoreCandidatesRequest in the proto's JSON mapping, like examples/request.json)",
        subject.config_path)]


def check_context_ignores_candidate(subject: Subject) -> list[Finding]:
    """The context is rendered once per member and never sees a candidate; a
    `candidate` in it is either an error at render time or, behind `is defined`,
    text that silently never appears."""
    sources = block_sources(subject.environment, subject.task.template.name, "context")
    return [
        subject.finding(Severity.ERROR, "prefix",
                        f"the context block uses {ref.path!r}; the shared context never sees a candidate "
                        f"(it is rendered once for all of them): move it to the candidate block",
                        ref.file, ref.line)
        for ref in references(sources) if ref.name in ("candidate", "entity_type")
    ]


VOLATILE = re.compile(
    r"(^|_)(now|today|current|time|timestamp|date|datetime|ago|request|request_id|session|session_id|trace|trace_id|nonce|random)(_|$)",
    re.IGNORECASE,
)


def check_volatile_prefix_fields(subject: Subject) -> list[Finding]:
    """A value that changes with every request (the time, a request id) in the
    context or a history item changes the prefix of every request, so the
    engine's prefix cache never hits across requests of the same member."""
    findings = []
    for block in ("context", "history_item"):
        sources = block_sources(subject.environment, subject.task.template.name, block)
        for ref in references(sources):
            last = ref.path.rsplit(".", 1)[-1]
            if "." in ref.path and VOLATILE.search(last):
                findings.append(subject.finding(
                    Severity.WARNING, "cache",
                    f"the {block} block uses {ref.path!r}, which looks like it changes with every request; "
                    f"in the shared prefix it defeats the prefix cache across requests: drop it, or bucket it "
                    f"(e.g. a day, not a second)", ref.file, ref.line))
    return findings


def check_profile_in_candidate(subject: Subject) -> list[Finding]:
    """Member data written in the candidate block is computed again for every
    candidate; in the context it is computed once and cached. Comparing a
    candidate field with a member field ("same company") writes no member
    data and is fine."""
    sources = block_sources(subject.environment, subject.task.template.name, "candidate")
    return [
        subject.finding(Severity.WARNING, "cache",
                        f"the candidate block uses {ref.path!r}: member data here is repeated in every "
                        f"candidate's tokens instead of shared in the cached context", ref.file, ref.line)
        for ref in written_references(sources) if ref.name == "profile" and "." in ref.path
    ]


def check_context_starts_with_fixed_text(subject: Subject) -> list[Finding]:
    """A context that opens with the fixed task instruction shares its first
    KV blocks across all members; one that opens with member data shares none."""
    sources = block_sources(subject.environment, subject.task.template.name, "context")
    first = first_output(sources)
    if first is None or isinstance(first, jinja2.nodes.TemplateData):
        return []
    return [subject.finding(Severity.WARNING, "cache",
                            "the context starts with request data; put the fixed task instruction first so "
                            "every member's prompt shares it in the prefix cache",
                            sources[0].file, first.lineno)]


def check_candidate_cue_whitespace(subject: Subject) -> list[Finding]:
    """Blanks after the answer cue are removed by the verbalizer (the label
    word carries its own leading space), so they mislead the reader."""
    sources = block_sources(subject.environment, subject.task.template.name, "candidate")
    text = last_text(sources)
    if text is None:
        return []
    cue = text.rstrip("\n")
    if cue and cue != cue.rstrip():
        return [subject.finding(
            Severity.WARNING, "answer",
            f"the candidate block ends with blanks after {cue.strip()[-20:]!r}; they are removed before the "
            f"label token (which carries its own leading space, e.g. ' Yes'): delete them", sources[0].file)]
    return []


def check_entity_type_branches(subject: Subject) -> list[Finding]:
    """A block that branches on `entity_type` (the history partial has one
    branch per type) writes an example's item of a type it has no branch for
    with its generic branch: the request is served, but the model reads the
    item in a form it was not shown in training. One warning per block and
    type, at the line of the block's first branch."""
    findings = []
    for block, noun in (("history_item", "history item"), ("candidate", "candidate")):
        known = branches(block_sources(subject.environment, subject.task.template.name, block), "entity_type")
        if not known:
            continue
        names = sorted({branch.value for branch in known})
        unbranched: dict[str, list[tuple[Example, Item]]] = {}
        for example in subject.examples:
            items = ([i.item for i in example.member.history] if block == "history_item"
                     else list(example.request.candidates))
            for item in items:
                if item.entity_type not in names:
                    unbranched.setdefault(item.entity_type, []).append((example, item))
        for entity_type, found in unbranched.items():
            example, item = found[0]
            ids = sorted({i.item_id for _, i in found})
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            findings.append(Finding(
                Severity.WARNING, "entities", known[0].file, known[0].line,
                f"{example.path.name}: {culprit(subject.task.name, example.index, noun, item.item_id)}: "
                f"entity type {entity_type!r} has no branch in {known[0].file.name} (it has: "
                f"{', '.join(names)}), so {noun}(s) {shown} render with its generic branch; add "
                f"{{% elif entity_type == \"{entity_type}\" %}} with the fields worth reading "
                f"(prompts/README.md, \"A new entity type\")"))
    return findings


# --- rendering checks (through the Verbalizer, on the examples) ---------------------

def check_fields(subject: Subject) -> list[Finding]:
    """Every block renders with StrictUndefined on every example: a field the
    template uses and the data lacks is an error with its template line."""
    findings = []
    verbalizer = subject.verbalizer()
    for example in subject.examples:
        try:
            verbalizer.prepare(example.member, example.request, example.index)
        except jinja2.TemplateSyntaxError as error:
            # Includes compile when first rendered: the same finding as check_partials_compile.
            findings.append(Finding(Severity.ERROR, "syntax", Path(error.filename or subject.template_path),
                                    error.lineno, error.message or ""))
        except BrewError as error:
            # The message names the task, the item and the template line itself.
            lines = template_lines(error)
            check = {TemplateFieldError: "fields", PromptTooLongError: "length"}.get(type(error), "render")
            findings.append(Finding(Severity.ERROR, check, lines[0].file if lines else subject.template_path,
                                    lines[0].line if lines else None, f"{example.path.name}: {error}"))
    return findings


def check_prefix_is_candidate_free(subject: Subject) -> list[Finding]:
    """The prefix ids are the same whatever the candidates and their order,
    and each candidate's ids do not depend on its position."""
    findings = []
    verbalizer = subject.verbalizer()
    for example in subject.examples:
        candidates = example.request.candidates
        base = verbalizer.prepare(example.member, example.request, example.index).group
        for variant in (candidates[::-1], candidates[:1]):
            reordered = dataclasses.replace(example.request, candidates=variant)
            other = verbalizer.prepare(example.member, reordered, example.index).group
            by_id = dict(zip((c.item_id for c in candidates), base.suffix_ids))
            if other.prefix_ids != base.prefix_ids:
                findings.append(subject.finding(Severity.ERROR, "prefix",
                                                f"{example.path.name}: the context changes with the candidate set"))
            elif any(by_id[c.item_id] != ids for c, ids in zip(variant, other.suffix_ids)):
                findings.append(subject.finding(Severity.ERROR, "prefix",
                                                f"{example.path.name}: a candidate block changes with its position"))
    return findings[:1]


def check_answer_position(subject: Subject) -> list[Finding]:
    """The label token follows the candidate text as a token of its own, the
    context and candidate join without re-tokenizing, and every candidate
    ends with the same fixed cue."""
    findings = []
    verbalizer = subject.verbalizer()
    tokenizer = subject.tokenizer
    last_lines = set()
    for example in subject.examples:
        prepared = verbalizer.prepare(example.member, example.request, example.index)
        group = prepared.group
        for text, ids in zip(prepared.candidate_texts, group.suffix_ids):
            last_lines.add(text.rsplit("\n", 1)[-1])
            for word, label_id in zip(subject.task.labels, group.label_ids):
                joined = tokenizer.encode(text + word)
                if joined != list(ids) + [label_id]:
                    findings.append(subject.finding(
                        Severity.ERROR, "answer",
                        f"{example.path.name}: {text[-20:]!r} followed by label {word!r} tokenizes as "
                        f"{joined[-3:]} (last 3), not the text's ids then {label_id}: the label is not read "
                        f"where the model would write it; end the candidate block with a cue like 'answer:'"))
        if not tokenizer.encode(prepared.context.text + prepared.candidate_texts[0]) == (
            list(group.prefix_ids[len(tokenizer.bos_ids):]) + list(group.suffix_ids[0])
        ):
            findings.append(subject.finding(
                Severity.WARNING, "prefix",
                f"{example.path.name}: the context's end and the candidate's start tokenize differently when "
                f"joined; end the context block with a newline"))
    if len(last_lines) > 1:
        shown = sorted(last_lines)[:3]
        findings.append(subject.finding(
            Severity.WARNING, "answer",
            f"the candidate block's last line differs between candidates ({shown}); end it with one fixed "
            f"cue (e.g. 'outcome:') so the label always follows the same words"))
    return _unique(findings)[:3]


def check_worst_case_length(subject: Subject) -> list[Finding]:
    """The longest prompt the budgets allow fits the model: the fixed context
    (measured on the examples' profiles, history left out), the history
    budget plus a separator per item, and the candidate budget."""
    task = subject.task
    policy = task.history
    verbalizer = subject.verbalizer()
    tokenizer = subject.tokenizer
    worst = 0
    detail = ""
    for example in subject.examples:
        bare = dataclasses.replace(example.member, history=())
        bare_context = verbalizer.render_context(bare, task, example.index).text
        fixed = len(tokenizer.bos_ids) + len(tokenizer.encode(bare_context))
        prepared = verbalizer.prepare(example.member, example.request, example.index)
        shown = [line for line in prepared.context.history if line.outcome != HistoryOutcome.DROPPED_FOR_BUDGET]
        extra = len(prepared.group.prefix_ids) - fixed - sum(line.tokens for line in shown)
        per_item = math.ceil(max(extra, 0) / len(shown)) if shown else 1
        separators = min(policy.max_items, policy.max_tokens) * per_item
        total = fixed + policy.max_tokens + separators + task.max_candidate_tokens
        if total > worst:
            worst = total
            detail = (f"context without history {fixed} + history max_tokens {policy.max_tokens} + "
                      f"{per_item} separator token(s) x up to {min(policy.max_items, policy.max_tokens)} items "
                      f"+ max_candidate_tokens {task.max_candidate_tokens}")
    # One position stays free for the answer token, as the verbalizer requires.
    if worst >= subject.max_model_len:
        return [subject.finding(
            Severity.ERROR, "length",
            f"the worst-case prompt is {worst} tokens ({detail}); the model accepts fewer than "
            f"{subject.max_model_len}: lower [history] max_tokens or max_items, or max_candidate_tokens",
            subject.config_path, _toml_line(subject.config_path, "max_tokens"))]
    return []


STATIC_CHECKS: tuple[Check, ...] = (
    check_labels,
    check_examples_exist,
    check_context_ignores_candidate,
    check_volatile_prefix_fields,
    check_profile_in_candidate,
    check_context_starts_with_fixed_text,
    check_candidate_cue_whitespace,
    check_entity_type_branches,
)
RENDER_CHECKS: tuple[Check, ...] = (  # run after check_fields passes
    check_prefix_is_candidate_free,
    check_answer_position,
    check_worst_case_length,
)

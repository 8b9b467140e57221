"""Hot reload of the prompts directory: check the new set first, then swap.

A new ranking surface is a new template, so templates change far more often
than the model: they must go live without a restart. A reload (SIGHUP or
AdminService/ReloadPrompts) loads the directory the server started with into
a new Verbalizer over the same tokenizer and engine, and lints it with the
checks of `brew prompts lint` (brew.prompt_lint). Any error and the old set
keeps serving; the caller gets the errors (FAILED_PRECONDITION), the log gets
them too. Otherwise the service's ranker is replaced in one assignment:
a request holds the ranker it started with, so it finishes with the
templates it was verbalized with, and the next one sees the new set. No
request waits for or fails because of a reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brew.errors import BrewError
from brew.prompt_lint import Severity, lint_prompts
from brew.ranker import Ranker
from brew.tasks import TaskRegistry, load_tasks
from brew.verbalize import Verbalizer
from serving.errors import NotReadyError, PromptReloadError


@dataclass(frozen=True)
class ReloadResult:
    tasks: TaskRegistry
    changed: tuple[str, ...]  # same name, new version
    added: tuple[str, ...]
    removed: tuple[str, ...]


def compare(old: TaskRegistry, new: TaskRegistry) -> ReloadResult:
    """What a swap from `old` to `new` changes, by task name."""
    changed = tuple(sorted(n for n in new if n in old and new[n].version != old[n].version))
    return ReloadResult(
        tasks=new,
        changed=changed,
        added=tuple(sorted(n for n in new if n not in old)),
        removed=tuple(sorted(n for n in old if n not in new)),
    )


def checked_verbalizer(prompts_dir: Path, current: Verbalizer) -> Verbalizer:
    """A verbalizer over the prompts in `prompts_dir` with the current
    tokenizer and length limit; PromptReloadError listing every lint error."""
    errors = [f for f in lint_prompts(prompts_dir, current.tokenizer, current.max_model_len)
              if f.severity is Severity.ERROR]
    if errors:
        listed = "\n".join(f"  {f.format(relative_to=prompts_dir)}" for f in errors)
        raise PromptReloadError(f"prompts in {prompts_dir} not reloaded, {len(errors)} error(s); "
                                f"the previous set keeps serving:\n{listed}")
    try:
        # A new, empty context cache: the old one holds the old templates' contexts.
        cache = current.context_cache.empty_like() if current.context_cache is not None else None
        return Verbalizer(load_tasks(prompts_dir), current.tokenizer, current.max_model_len, context_cache=cache)
    except BrewError as error:  # e.g. a file changed again between lint and load
        raise PromptReloadError(f"prompts in {prompts_dir} not reloaded: {error}") from error


class PromptReloader:
    """Serializes reloads and performs the swap through `install`."""

    def __init__(self, prompts_dir: Path, current: Callable[[], Ranker | None],
                 install: Callable[[Ranker], None]) -> None:
        self.prompts_dir = prompts_dir
        self._current = current
        self._install = install
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        async with self._lock:  # two reloads at once would race to install
            ranker = self._current()
            if ranker is None:
                raise NotReadyError("the server is still loading its model; reload when it is serving")
            # Linting renders templates and tokenizes: off the event loop.
            verbalizer = await asyncio.to_thread(checked_verbalizer, self.prompts_dir, ranker.verbalizer)
            result = compare(ranker.verbalizer.tasks, verbalizer.tasks)
            # The engine may have been restarted meanwhile: keep the one serving now.
            self._install(Ranker(verbalizer, (self._current() or ranker).engine))
            return result

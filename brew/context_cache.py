"""A bounded cache of rendered and tokenized shared contexts.

Half of ranking traffic is a member seen a moment ago (the next page of a
feed, another task for the same member), and a member's shared context
(profile and history, rendered by the task's template, history budgeted in
tokens, tokenized) is the costliest CPU step of a request. The context
depends on the task (its name and template version) and on what the context
block reads of the member: the profile and the history, never the member id
or a candidate. So the key is (task, version, a digest of the profile and
history), and a hit returns exactly what rendering would: a cached context
never changes a score (tests/unit/test_context_cache.py).

Least-recently-used eviction under a fixed number of entries; safe to use
from the worker threads that prepare requests. A prompt reload builds a new
verbalizer with an empty cache (`empty_like`), and the version in the key
keeps an old template's context from ever serving a new one.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from brew.types import Member

V = TypeVar("V")

DEFAULT_ENTRIES = 4096
HIT, MISS, EVICTION = "hit", "miss", "eviction"


def member_digest(member: Member) -> bytes:
    """A digest of everything a context block can read of a member: its
    profile and its history (actions, items, times). Not its id.

    The member's own `digest` when it has one (brew.wire computes it from
    the request's bytes without decoding the history); otherwise one hash
    over the repr of a tuple of strings and floats: repr quotes
    and escapes every string, so no two different members write the same
    text, and it is one C call where hashing field by field was hundreds."""
    if member.digest is not None:
        return member.digest
    profile = tuple(sorted(member.profile.items()))
    history = tuple(
        (interaction.action, interaction.timestamp, interaction.item.item_id, interaction.item.entity_type,
         tuple(sorted(interaction.item.fields.items())))
        for interaction in member.history
    )
    return hashlib.blake2b(repr((profile, history)).encode("utf-8"), digest_size=16).digest()


class ContextCache(Generic[V]):
    """Key -> value, least recently used out first; counts hits, misses, evictions."""

    def __init__(self, entries: int = DEFAULT_ENTRIES, on_event: Callable[[str], None] | None = None) -> None:
        if entries < 1:
            raise ValueError(f"a context cache needs at least 1 entry, got {entries}")
        self.entries = entries
        self.on_event = on_event
        self._values: OrderedDict[tuple[object, ...], V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._values)

    def get_or_make(self, key: tuple[object, ...], make: Callable[[], V]) -> V:
        """The cached value of `key`, or `make()` stored under it. `make`
        runs outside the lock (rendering takes milliseconds); two threads
        missing the same key at once both render, and one result is kept."""
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
                self.hits += 1
        if value is not None:
            self._event(HIT)
            return value
        value = make()
        evicted = 0
        with self._lock:
            self.misses += 1
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.entries:
                self._values.popitem(last=False)
                evicted += 1
            self.evictions += evicted
        self._event(MISS)
        for _ in range(evicted):
            self._event(EVICTION)
        return value

    def empty_like(self) -> ContextCache[V]:
        """A new, empty cache of the same size reporting to the same place."""
        return ContextCache(self.entries, self.on_event)

    def _event(self, kind: str) -> None:
        if self.on_event is not None:
            self.on_event(kind)

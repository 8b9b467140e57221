"""The model's tokenizer, used the one way scoring needs it.

Text is tokenized in parts (context, each candidate) without special tokens,
and the parts are concatenated as ids with one BOS at the very start. Label
words must each be exactly one token, distinct from each other: the score is
read from one position, so a two-token label cannot be scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from brew.errors import TaskConfigError


class PromptTokenizer:
    """A thin wrapper over a Hugging Face tokenizer with Brew's conventions."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        # The Rust tokenizer under a fast Hugging Face tokenizer; None for a slow one.
        self._backend = getattr(tokenizer, "backend_tokenizer", None) if tokenizer.is_fast else None
        bos = tokenizer.bos_token_id
        self.bos_ids: tuple[int, ...] = () if bos is None else (int(bos),)

    @classmethod
    def from_pretrained(cls, model_dir: Path | str) -> PromptTokenizer:
        """Load the tokenizer stored in a checkpoint directory (never a hub)."""
        return cls(AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True))

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text part, no special tokens added."""
        return self.encode_many([text])[0]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of several parts in one call. A fast tokenizer's Rust
        backend is called directly (`encode_batch_fast`: ids only, no
        offsets), a third cheaper than the Python wrapper around it and the
        same ids (tests/unit/test_tokenization.py); a slow tokenizer goes
        through its wrapper."""
        if not texts:
            return []
        if self._backend is not None:
            return [encoding.ids for encoding in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)]
        encoded = self._tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def encode_query(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of a raw scoring query (brew.query_items): with the
        special tokens this tokenizer adds to a text of its own (none for
        some models), as the peer scoring APIs tokenize a query."""
        return list(self._tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text)` and, per token, its (start, end) characters in `text`,
        so a report can say which part of a prompt each token came from.
        Needs a fast (Rust) tokenizer; slow ones raise NotImplementedError."""
        encoded = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def label_ids(self, task_name: str, labels: Sequence[str]) -> tuple[int, ...]:
        """The single token id of each label word, or a TaskConfigError naming
        the word that is not one token or that collides with another."""
        ids: list[int] = []
        for word in labels:
            word_ids = self.encode(word)
            if len(word_ids) != 1:
                pieces = [self.decode([token]) for token in word_ids]
                raise TaskConfigError(
                    f"task {task_name}: label word {word!r} is {len(word_ids)} tokens "
                    f"{pieces} in this model's tokenizer; each label must be a single "
                    f"token (mind the leading space, e.g. ' Yes')"
                )
            ids.append(word_ids[0])
        if len(set(ids)) != len(ids):
            raise TaskConfigError(
                f"task {task_name}: label words {list(labels)} map to repeated token ids {ids}"
            )
        return tuple(ids)

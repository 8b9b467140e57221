"""Raw scoring: one query, N items, the caller's own label token ids; no template.

This is the request shape of the peer scoring APIs (SGLang's `/v1/score`,
vLLM's `/generative_scoring`): the caller has written the prompt text (or
tokenized it) and names the label tokens itself. Brew scores it as one
scoring group, exactly like a task's: the query's ids are the shared prefix
(so the prefix cache and multi-item scoring apply unchanged) and each item's
ids a candidate suffix; the engine reads the label log-probabilities at the
end of each `query + item`.

Tokenization follows the peers' own rule: the query (text) is tokenized with
the tokenizer's special tokens (`add_special_tokens`, as the model's
tokenizer defines them), each item without, and the two are concatenated as
ids, never as text. With `item_first` the prompt is `item + query`: the items
then share no prefix, and the group has an empty one.

A prompt the model cannot take is refused, naming the item, where the peers
would cut it short: a truncated prompt would be scored at the wrong place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brew.errors import InvalidRequestError, PromptTooLongError
from brew.tokenization import PromptTokenizer
from brew.types import CandidateLogprobs, ScoringGroup

# Text, or token ids the caller tokenized itself.
Text = str | tuple[int, ...]


@dataclass(frozen=True)
class QueryItemsRequest:
    """One raw scoring request, as the transports hand it over."""

    request_id: str
    query: Text
    items: tuple[Text, ...]
    label_ids: tuple[int, ...]
    item_first: bool = False
    add_special_tokens: bool = True  # for a text query; items never get them


@dataclass(frozen=True)
class QueryItemsResponse:
    """The engine's answer per item, in request order, with the label
    log-probabilities in the request's label order, and every server timing."""

    request_id: str
    model: str
    items: tuple[CandidateLogprobs, ...]
    prepare_seconds: float = 0.0
    engine_seconds: float = 0.0
    queue_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def prompt_tokens(self) -> int:
        return sum(item.prompt_tokens for item in self.items)

    @property
    def cached_tokens(self) -> int:
        return sum(item.cached_tokens for item in self.items)


def query_items_group(request: QueryItemsRequest, tokenizer: PromptTokenizer, max_model_len: int) -> ScoringGroup:
    """The request as one scoring group; InvalidRequestError naming the field
    (`label_token_ids[2]`, `items[4]`) for anything the model cannot score."""
    vocab = tokenizer.vocab_size
    if not request.label_ids:
        raise InvalidRequestError("label_token_ids is empty; give at least one token id")
    _check_ids(request.label_ids, vocab, "label_token_ids")
    if not request.items:
        raise InvalidRequestError("items is empty; give at least one item")
    if isinstance(request.query, str):
        query = tuple(tokenizer.encode_query(request.query, request.add_special_tokens))
    else:
        query = _check_ids(request.query, vocab, "query")
    texts = [item for item in request.items if isinstance(item, str)]
    encoded = iter(tokenizer.encode_many(texts))
    items = [tuple(next(encoded)) if isinstance(item, str) else _check_ids(item, vocab, f"items[{index}]")
             for index, item in enumerate(request.items)]
    if request.item_first:
        prefix, suffixes = (), tuple(item + query for item in items)
    else:
        prefix, suffixes = query, tuple(items)
    for index, suffix in enumerate(suffixes):
        length = len(prefix) + len(suffix)
        if not length:
            raise InvalidRequestError(f"items[{index}]: the query and the item are both empty; nothing to score")
        # One position stays free: the engine reads the logits of the next token.
        if length >= max_model_len:
            raise PromptTooLongError(f"items[{index}]: query and item make a prompt of {length} tokens; the "
                                     f"model accepts fewer than {max_model_len}; shorten them")
    return ScoringGroup(prefix, suffixes, request.label_ids)


def _check_ids(ids: Sequence[int], vocab: int, field: str) -> tuple[int, ...]:
    for index, token in enumerate(ids):
        if not 0 <= token < vocab:
            raise InvalidRequestError(f"{field}[{index}] is {token}, not a token id of this model "
                                      f"(its vocabulary is 0..{vocab - 1})")
    return tuple(ids)

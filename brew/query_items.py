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
ids, never as text. With `item_first` the prompt is `item + query`.

Every engine takes groups whose prefix and candidate suffixes are not empty
(the verbalizer's groups always are; vLLM's multi-item path needs it). So
when the query is empty, an item is, or the items come first, the prompts'
longest common prefix is the group's (each suffix keeping a token at least),
and when they share no first token each prompt is a group of its own, split
before its last token. A prompt is the same ids whichever way it is split,
so its score is too.

A prompt the model cannot take is refused, naming the item, where the peers
would cut it short: a truncated prompt would be scored at the wrong place.
So is a prompt of a single token, which no split can give a prefix.
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


def query_items_groups(request: QueryItemsRequest, tokenizer: PromptTokenizer,
                       max_model_len: int) -> list[ScoringGroup]:
    """The request as scoring groups whose candidates, in order, are its
    items; InvalidRequestError naming the field (`label_token_ids[2]`,
    `items[4]`) for anything the model cannot score."""
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
    prompts = [item + query if request.item_first else query + item for item in items]
    for index, prompt in enumerate(prompts):
        if len(prompt) < 2:
            raise InvalidRequestError(f"items[{index}]: query and item make a prompt of {len(prompt)} token(s); "
                                      f"a score is read after a prefix, so a prompt needs two tokens at least")
        # One position stays free: the engine reads the logits of the next token.
        if len(prompt) >= max_model_len:
            raise PromptTooLongError(f"items[{index}]: query and item make a prompt of {len(prompt)} tokens; "
                                     f"the model accepts fewer than {max_model_len}; shorten them")
    labels = request.label_ids
    if not request.item_first and query and all(items):
        return [ScoringGroup(query, tuple(items), labels)]
    shared = min(_common_prefix_length(prompts), min(len(prompt) for prompt in prompts) - 1)
    if shared:
        return [ScoringGroup(prompts[0][:shared], tuple(prompt[shared:] for prompt in prompts), labels)]
    return [ScoringGroup(prompt[:-1], (prompt[-1:],), labels) for prompt in prompts]


def _common_prefix_length(prompts: Sequence[tuple[int, ...]]) -> int:
    first = prompts[0]
    length = len(first)
    for prompt in prompts[1:]:
        length = min(length, len(prompt))
        for position in range(length):
            if prompt[position] != first[position]:
                length = position
                break
    return length


def _check_ids(ids: Sequence[int], vocab: int, field: str) -> tuple[int, ...]:
    for index, token in enumerate(ids):
        if not 0 <= token < vocab:
            raise InvalidRequestError(f"{field}[{index}] is {token}, not a token id of this model "
                                      f"(its vocabulary is 0..{vocab - 1})")
    return tuple(ids)

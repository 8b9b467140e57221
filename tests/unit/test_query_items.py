"""Raw query/items requests (brew.query_items): the peers' tokenization rule
(query with special tokens, items without, joined as ids), item_first, the
groups every engine takes (a prefix and suffixes that are not empty, the
prompts' ids unchanged), and a precise refusal naming the field for what the
model cannot score. Also the two score readings (brew.scoring.label_scores).
No model weights."""

from __future__ import annotations

import math

import pytest

from brew.errors import InvalidRequestError, PromptTooLongError
from brew.query_items import QueryItemsRequest, query_items_groups
from brew.scoring import label_probabilities, label_scores


def request(**fields) -> QueryItemsRequest:  # type: ignore[no-untyped-def]
    values = {"request_id": "r", "query": "member likes sql", "items": ("job: analyst", "job: chef"),
              "label_ids": (392, 391)}
    return QueryItemsRequest(**{**values, **fields})


def prompts(groups) -> list[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    """Each item's prompt, in item order, however the groups split it."""
    return [group.prefix_ids + suffix for group in groups for suffix in group.suffix_ids]


def test_query_is_the_prefix_and_each_item_a_suffix_tokenized_apart(demo_tokenizer):
    (group,) = query_items_groups(request(), demo_tokenizer, max_model_len=1024)
    assert group.prefix_ids == tuple(demo_tokenizer.encode_query("member likes sql", True))
    assert group.suffix_ids == (tuple(demo_tokenizer.encode("job: analyst")), tuple(demo_tokenizer.encode("job: chef")))
    assert group.label_ids == (392, 391)


def test_query_special_tokens_are_the_tokenizers_own(demo_tokenizer):
    hf = demo_tokenizer._tokenizer
    for add in (True, False):
        (group,) = query_items_groups(request(add_special_tokens=add), demo_tokenizer, max_model_len=1024)
        assert list(group.prefix_ids) == hf("member likes sql", add_special_tokens=add)["input_ids"]


def test_items_first_share_their_common_prefix_or_are_groups_of_their_own(demo_tokenizer):
    groups = query_items_groups(request(query=(5, 6), items=((7,), (8, 9)), item_first=True), demo_tokenizer, 1024)
    assert prompts(groups) == [(7, 5, 6), (8, 9, 5, 6)]
    assert [(g.prefix_ids, g.suffix_ids) for g in groups] == [((7, 5), ((6,),)), ((8, 9, 5), ((6,),))]
    (shared,) = query_items_groups(request(query=(5,), items=((7, 1), (7, 2, 3)), item_first=True), demo_tokenizer,
                                   1024)
    assert (shared.prefix_ids, shared.suffix_ids) == ((7,), ((1, 5), (2, 3, 5)))


@pytest.mark.parametrize("fields", [{"query": ()}, {"query": (4, 5), "items": ((1, 2), ())},
                                    {"query": "", "items": ("job: analyst", "job: chef")}])
def test_an_empty_query_or_item_never_makes_an_empty_prefix_or_suffix(demo_tokenizer, fields):
    raw = request(**{"items": ((4, 1), (4, 2, 3)), **fields})
    groups = query_items_groups(raw, demo_tokenizer, 1024)
    assert all(g.prefix_ids and all(g.suffix_ids) for g in groups)
    query = raw.query if isinstance(raw.query, tuple) else tuple(demo_tokenizer.encode_query(raw.query))
    items = [i if isinstance(i, tuple) else tuple(demo_tokenizer.encode(i)) for i in raw.items]
    assert prompts(groups) == [query + item for item in items]


def test_mixed_text_and_ids_keep_the_item_order(demo_tokenizer):
    (group,) = query_items_groups(request(items=("job: chef", (8, 9), "job: analyst")), demo_tokenizer, 1024)
    assert group.suffix_ids[1] == (8, 9)
    assert group.suffix_ids[2] == tuple(demo_tokenizer.encode("job: analyst"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"label_ids": ()}, "label_token_ids is empty"),
    ({"label_ids": (392, 10**6)}, r"label_token_ids\[1\] is 1000000, not a token id"),
    ({"label_ids": (-1,)}, r"label_token_ids\[0\] is -1"),
    ({"items": ()}, "items is empty"),
    ({"query": (1, 99999)}, r"query\[1\] is 99999"),
    ({"items": ("a", (3, -2))}, r"items\[1\]\[1\] is -2"),
    ({"query": "", "items": ("x y", "")}, r"items\[1\]: query and item make a prompt of 0 token\(s\)"),
    ({"query": (3,), "items": ((4,), ())}, r"items\[1\]: query and item make a prompt of 1 token\(s\)"),
])
def test_bad_fields_are_named(demo_tokenizer, fields, message):
    with pytest.raises(InvalidRequestError, match=message):
        query_items_groups(request(**fields), demo_tokenizer, 1024)


def test_a_prompt_too_long_names_its_item(demo_tokenizer):
    with pytest.raises(PromptTooLongError, match=r"items\[1\]: query and item make a prompt of 10 tokens"):
        query_items_groups(request(query=(1,) * 6, items=((2,), (3,) * 4)), demo_tokenizer, max_model_len=10)


@pytest.mark.parametrize("logprobs", [(-0.5, -2.0), (-100.0, -100.5), (-1e4, -3.0)])
def test_label_scores_softmax_over_labels_or_true_probabilities(logprobs):
    assert label_scores(logprobs, softmax=True) == label_probabilities(logprobs)
    assert label_scores(logprobs, softmax=False) == tuple(math.exp(v) for v in logprobs)
    assert sum(label_scores(logprobs, softmax=True)) == pytest.approx(1.0)

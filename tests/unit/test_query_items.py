"""Raw query/items requests (brew.query_items): the peers' tokenization rule
(query with special tokens, items without, joined as ids), item_first, and
a precise refusal naming the field for what the model cannot score. Also the
two score readings (brew.scoring.label_scores). No model weights."""

from __future__ import annotations

import math

import pytest

from brew.errors import InvalidRequestError, PromptTooLongError
from brew.query_items import QueryItemsRequest, query_items_group
from brew.scoring import label_probabilities, label_scores


def request(**fields) -> QueryItemsRequest:  # type: ignore[no-untyped-def]
    values = {"request_id": "r", "query": "member likes sql", "items": ("job: analyst", "job: chef"),
              "label_ids": (392, 391)}
    return QueryItemsRequest(**{**values, **fields})


def test_query_is_the_prefix_and_each_item_a_suffix_tokenized_apart(demo_tokenizer):
    group = query_items_group(request(), demo_tokenizer, max_model_len=1024)
    assert group.prefix_ids == tuple(demo_tokenizer.encode_query("member likes sql", True))
    assert group.suffix_ids == (tuple(demo_tokenizer.encode("job: analyst")), tuple(demo_tokenizer.encode("job: chef")))
    assert group.label_ids == (392, 391)


def test_query_special_tokens_are_the_tokenizers_own(demo_tokenizer):
    hf = demo_tokenizer._tokenizer
    for add in (True, False):
        group = query_items_group(request(add_special_tokens=add), demo_tokenizer, max_model_len=1024)
        assert list(group.prefix_ids) == hf("member likes sql", add_special_tokens=add)["input_ids"]


def test_token_ids_pass_through_and_item_first_puts_items_before_the_query(demo_tokenizer):
    group = query_items_group(request(query=(5, 6), items=((7,), (8, 9)), item_first=True), demo_tokenizer, 1024)
    assert group.prefix_ids == ()
    assert group.suffix_ids == ((7, 5, 6), (8, 9, 5, 6))


def test_mixed_text_and_ids_keep_the_item_order(demo_tokenizer):
    group = query_items_group(request(items=("job: chef", (8, 9), "job: analyst")), demo_tokenizer, 1024)
    assert group.suffix_ids[1] == (8, 9)
    assert group.suffix_ids[2] == tuple(demo_tokenizer.encode("job: analyst"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"label_ids": ()}, "label_token_ids is empty"),
    ({"label_ids": (392, 10**6)}, r"label_token_ids\[1\] is 1000000, not a token id"),
    ({"label_ids": (-1,)}, r"label_token_ids\[0\] is -1"),
    ({"items": ()}, "items is empty"),
    ({"query": (1, 99999)}, r"query\[1\] is 99999"),
    ({"items": ("a", (3, -2))}, r"items\[1\]\[1\] is -2"),
    ({"query": "", "items": ("x", "")}, r"items\[1\]: the query and the item are both empty"),
])
def test_bad_fields_are_named(demo_tokenizer, fields, message):
    with pytest.raises(InvalidRequestError, match=message):
        query_items_group(request(**fields), demo_tokenizer, 1024)


def test_a_prompt_too_long_names_its_item(demo_tokenizer):
    with pytest.raises(PromptTooLongError, match=r"items\[1\]: query and item make a prompt of 10 tokens"):
        query_items_group(request(query=(1,) * 6, items=((2,), (3,) * 4)), demo_tokenizer, max_model_len=10)


@pytest.mark.parametrize("logprobs", [(-0.5, -2.0), (-100.0, -100.5), (-1e4, -3.0)])
def test_label_scores_softmax_over_labels_or_true_probabilities(logprobs):
    assert label_scores(logprobs, softmax=True) == label_probabilities(logprobs)
    assert label_scores(logprobs, softmax=False) == tuple(math.exp(v) for v in logprobs)
    assert sum(label_scores(logprobs, softmax=True)) == pytest.approx(1.0)

"""The tokenization boundary, on a tiny byte-level BPE tokenizer trained in the
test (milliseconds, nothing downloaded) from text the shipped templates render."""

from __future__ import annotations

import pytest
from tokenizers.processors import TemplateProcessing

from brew import defaults
from brew.demo.checkpoint import train_tokenizer
from brew.demo.examples import corpus_texts
from brew.demo.world import World
from brew.errors import TaskConfigError
from brew.tokenization import PromptTokenizer
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto

BOS_ID = 1  # "<s>": the specials come first, in the order <pad>, <s>, </s>


@pytest.fixture(scope="module")
def corpus(shipped_tasks) -> list[str]:
    return list(corpus_texts(World(0), shipped_tasks, members=6))


@pytest.fixture(scope="module")
def tokenizer(corpus) -> PromptTokenizer:
    # 600 entries: enough merges for every label word to be one token.
    return PromptTokenizer(train_tokenizer(corpus, vocab_size=600))


@pytest.fixture(scope="module")
def example():
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


def test_the_wrapper_reports_bos_and_vocabulary(tokenizer):
    assert tokenizer.bos_ids == (BOS_ID,)
    assert tokenizer.vocab_size == 600


def test_a_tokenizer_without_bos_adds_none(corpus):
    raw = train_tokenizer(corpus[:10], vocab_size=300)
    raw.bos_token = None
    assert PromptTokenizer(raw).bos_ids == ()


def test_parts_are_encoded_without_special_tokens_even_if_the_tokenizer_would_add_them(corpus):
    raw = train_tokenizer(corpus, vocab_size=600)
    raw.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS_ID)]
    )
    assert raw("member: x")["input_ids"][0] == BOS_ID  # the raw tokenizer adds it
    wrapped = PromptTokenizer(raw)
    assert BOS_ID not in wrapped.encode("member: x")
    assert all(BOS_ID not in ids for ids in wrapped.encode_many(["member: x", "job: y"]))


def test_encode_many_through_the_backend_equals_the_hugging_face_call(demo_tokenizer, corpus):
    """encode_many calls the Rust backend directly; the ids must be the ones
    the Hugging Face wrapper returns, for the demo tokenizer and texts the
    templates render (and the empty text, and label words)."""
    texts = corpus[:40] + ["", " Yes", " applied", "ünïcode ✓ text"]
    wrapper = demo_tokenizer._tokenizer
    assert demo_tokenizer.encode_many(texts) == [
        list(ids) for ids in wrapper(texts, add_special_tokens=False)["input_ids"]]


def test_encode_many_is_encode_per_text(tokenizer, corpus):
    texts = corpus[:5] + ["", " Yes"]
    assert tokenizer.encode_many(texts) == [tokenizer.encode(text) for text in texts]
    assert tokenizer.encode_many([]) == []


def test_decode_inverts_encode(tokenizer):
    text = "liked post: video on ai by colleague. Ünïcödé ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_every_shipped_label_is_one_distinct_token(tokenizer, shipped_tasks):
    for name, task in shipped_tasks.items():
        ids = tokenizer.label_ids(name, task.labels)
        assert len(ids) == len(task.labels) == len(set(ids))
        assert [tokenizer.encode(word) for word in task.labels] == [[token] for token in ids]
        assert [tokenizer.decode([token]) for token in ids] == list(task.labels)


def test_a_label_of_several_tokens_is_named(tokenizer):
    message = r"task t: label word ' xylophone' is \d+ tokens .*single token"
    with pytest.raises(TaskConfigError, match=message):
        tokenizer.label_ids("t", [" Yes", " xylophone"])


def test_a_label_of_no_tokens_is_named(tokenizer):
    with pytest.raises(TaskConfigError, match=r"label word '' is 0 tokens"):
        tokenizer.label_ids("t", [" Yes", ""])


def test_labels_that_share_a_token_are_refused(tokenizer):
    with pytest.raises(TaskConfigError, match=r"label words \[' No', ' No'\] map to repeated token ids"):
        tokenizer.label_ids("t", [" No", " No"])


def test_a_tokenizer_too_small_for_the_labels_fails_when_the_verbalizer_is_built(corpus, shipped_tasks):
    small = PromptTokenizer(train_tokenizer(corpus, vocab_size=300))
    with pytest.raises(TaskConfigError, match=r"label word ' Yes' is [2-9] tokens"):
        Verbalizer(shipped_tasks, small, max_model_len=1024)


def test_a_prompt_is_bos_then_context_ids_then_candidate_ids(tokenizer, shipped_tasks, example):
    verbalizer = Verbalizer(shipped_tasks, tokenizer, max_model_len=1024)
    for request in example.tasks:
        prepared = verbalizer.prepare(example.member, request)
        group = prepared.group
        context_ids = tuple(tokenizer.encode(prepared.context.text))
        assert group.prefix_ids == (BOS_ID, *context_ids)
        assert group.label_ids == tokenizer.label_ids(request.task, shipped_tasks[request.task].labels)
        for index, text in enumerate(prepared.candidate_texts):
            prompt = group.prompt_ids(index)
            assert prompt == (BOS_ID, *context_ids, *tokenizer.encode(text))
            assert prompt.count(BOS_ID) == 1  # one BOS, at the start only

"""vLLM's /generative_scoring body carries Brew's exact ids with the positive
label first. No server is started."""

from __future__ import annotations

from brew.types import Item, Member, TaskRequest
from brew.verbalize import Verbalizer
from loadtest.bench.vllm_http import scoring_payload

MEMBER = Member(
    member_id="m1",
    profile={"title": "ML Engineer", "seniority": "mid", "company": "Acme", "location": "Berlin",
             "school": "TU Berlin", "skills": "python, pytorch"},
    history=(),
)
JOBS = tuple(
    Item(f"j{i}", "job", {"title": title, "seniority": "mid", "company": "Initech", "location": "Berlin",
                          "remote": "no", "skills": "python, sql"})
    for i, title in enumerate(["ML Engineer", "Sales Manager"], start=1)
)


def test_the_payload_carries_brews_ids_with_the_positive_label_first(shipped_tasks, demo_tokenizer):
    prepared = Verbalizer(shipped_tasks, demo_tokenizer, 1024).prepare(MEMBER, TaskRequest("job_apply", JOBS))
    payload = scoring_payload(prepared, "brew-demo")
    group = prepared.group
    assert payload["query"] == list(group.prefix_ids)
    assert payload["items"] == [list(s) for s in group.suffix_ids]
    positive = group.label_ids[prepared.task.positive_index]
    assert payload["label_token_ids"][0] == positive
    assert sorted(payload["label_token_ids"]) == sorted(group.label_ids)
    assert payload["apply_softmax"] is True and payload["add_special_tokens"] is False

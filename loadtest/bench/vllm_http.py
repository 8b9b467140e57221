"""vLLM's own scoring endpoint as a load-test target, for side-by-side runs.

vLLM's OpenAI-compatible server (`python -m vllm.entrypoints.openai.api_server`)
has `POST /generative_scoring`: one `query` (the shared context) and a list of
`items` (the candidate blocks), answering the probability of the first label
token at each item's end, softmaxed over `label_token_ids`. This scorer sends
it exactly the token ids Brew scores: the same Verbalizer renders and
tokenizes each Brew request here, in the client, and each task becomes one
HTTP call with the positive label first (so the score is Brew's P(positive));
the tasks of one request go in parallel and the request ends with the last.

Both systems thus do the same model work and only the serving path differs.
Rendering in the client keeps it out of vLLM's measured latency, a small
advantage to vLLM that BENCHMARKS.md states.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from brew.context_cache import ContextCache
from brew.model_limits import max_model_len
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.v1 import ranking_pb2 as pb
from brew.verbalize import PreparedTask, Verbalizer
from brew.wire import request_from_proto
from loadtest.http_client import HttpScorer
from loadtest.runner import ScoringFailed


def verbalizer_for(model_dir: Path, prompts_dir: Path, context_cache: ContextCache | None = None) -> Verbalizer:
    """The model's own tokenizer and length limit over the given prompts
    (with `context_cache`, a member's context is rendered once, as the server does)."""
    return Verbalizer(load_tasks(prompts_dir), PromptTokenizer.from_pretrained(model_dir), max_model_len(model_dir),
                      context_cache=context_cache)


def scoring_payload(prepared: PreparedTask, model: str) -> dict[str, object]:
    """The /generative_scoring body for one task: positive label first."""
    group = prepared.group
    positive = prepared.task.positive_index
    labels = [group.label_ids[positive]] + [t for i, t in enumerate(group.label_ids) if i != positive]
    return {
        "model": model,
        "query": list(group.prefix_ids),
        "items": [list(suffix) for suffix in group.suffix_ids],
        "label_token_ids": labels,
        "apply_softmax": True,
        "add_special_tokens": False,
    }


class VllmScoringScorer(HttpScorer):
    """A loadtest Scorer that calls one vLLM server's /generative_scoring,
    through the same HTTP client as `--protocol http` (loadtest.http_client)."""

    def __init__(self, base_url: str, verbalizer: Verbalizer, model: str) -> None:
        super().__init__(base_url)
        self.verbalizer = verbalizer
        self.model = model

    @classmethod
    def for_model(cls, base_url: str, model_dir: Path, prompts_dir: Path) -> VllmScoringScorer:
        """Verbalize as `brew serve` would; the served model name is the directory's name."""
        return cls(base_url, verbalizer_for(model_dir, prompts_dir), model_dir.name)

    async def _score_task(self, prepared: PreparedTask, timeout: float) -> list[float]:
        body = json.dumps(scoring_payload(prepared, self.model)).encode()
        reply = await self.post("/generative_scoring", body, timeout)
        return [item["score"] for item in sorted(reply.body["data"], key=lambda d: d["index"])]

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> list[list[float]]:
        """Scores per task, in request order; ScoringFailed on an error or the deadline."""
        domain = request_from_proto(request)
        prepared = [self.verbalizer.prepare(domain.member, task) for task in domain.tasks]
        try:
            async with asyncio.timeout(timeout):
                return list(await asyncio.gather(*(self._score_task(p, timeout) for p in prepared)))
        except TimeoutError:
            raise ScoringFailed("DEADLINE_EXCEEDED") from None

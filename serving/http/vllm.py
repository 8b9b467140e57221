"""POST /generative_scoring: vLLM's generative scoring API, field for field.

The request and response are vLLM's `GenerativeScoringRequest` and
`GenerativeScoringResponse` (vllm/entrypoints/generate/generative_scoring/
serving.py): `query` and `items` (text or token ids), `label_token_ids`,
`apply_softmax` (default true: normalized over the labels; false: each
label's probability over the whole vocabulary), `item_first`,
`add_special_tokens` (for the query; items never get them). The score of an
item is the probability of `label_token_ids[0]`. `cache_salt` and `priority`
are accepted and have no effect: Brew's prefix cache is the engine's own,
and its queue is first come, first served.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from brew.query_items import QueryItemsRequest, QueryItemsResponse
from brew.scoring import label_scores
from serving.http.openai import UsageInfo, usage_of


class GenerativeScoringRequest(BaseModel):
    model: str | None = None
    query: str | list[int] = Field(..., description="The query text or pre-tokenized query token IDs.")
    items: list[str] | list[list[int]] = Field(..., description="List of item texts or pre-tokenized item token IDs.")
    label_token_ids: list[int] = Field(..., description="List of token IDs to compute probabilities for.")
    apply_softmax: bool = Field(True, description="If True, normalize probabilities using softmax over only the "
                                                  "label_token_ids. If False, return the true model probabilities "
                                                  "over the full vocab for those ids.")
    item_first: bool = Field(False, description="If True, prepend items to query. Otherwise append items to query.")
    add_special_tokens: bool = Field(True, description="Whether to add special tokens when tokenizing the query.")
    cache_salt: str | None = Field(None, description="Accepted for compatibility; no effect in Brew.")
    priority: int = Field(0, ge=-(2**63), le=2**63 - 1, description="Accepted for compatibility; no effect in Brew.")
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex,
                            description="The request_id related to this request.")


class GenerativeScoringItemResult(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class GenerativeScoringResponse(BaseModel):
    id: str = ""
    object: Literal["list"] = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[GenerativeScoringItemResult]
    usage: UsageInfo


def query_items(request: GenerativeScoringRequest) -> QueryItemsRequest:
    return QueryItemsRequest(
        request_id=request.request_id,
        query=request.query if isinstance(request.query, str) else tuple(request.query),
        items=tuple(item if isinstance(item, str) else tuple(item) for item in request.items),
        label_ids=tuple(request.label_token_ids),
        item_first=request.item_first,
        add_special_tokens=request.add_special_tokens,
    )


def generative_scoring_response(request: GenerativeScoringRequest,
                                response: QueryItemsResponse) -> GenerativeScoringResponse:
    return GenerativeScoringResponse(
        id=f"generative-scoring-{request.request_id}",
        model=response.model,
        data=[GenerativeScoringItemResult(index=index, score=label_scores(item.label_logprobs,
                                                                          request.apply_softmax)[0])
              for index, item in enumerate(response.items)],
        usage=usage_of(response),
    )

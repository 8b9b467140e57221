"""POST /v1/score: SGLang's scoring API, field for field.

The request and response are SGLang's `ScoringRequest` and `ScoringResponse`
(python/sglang/srt/entrypoints/openai/protocol.py): a `query` and `items`
(text or token ids; one text item may come bare), the `label_token_ids` to
read, `apply_softmax` (default false: each label's probability over the
whole vocabulary; true: normalized over the labels), `item_first`. The answer
has one row per item, its probabilities in `label_token_ids` order.

SGLang's embedding overrides and pooled hidden states are refused by name:
Brew reads label log-probabilities only. The request becomes a raw
query/items request (brew.query_items), scored like a task group.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from brew.errors import InvalidRequestError
from brew.query_items import QueryItemsRequest, QueryItemsResponse
from brew.scoring import label_scores
from serving.http.openai import UsageInfo, usage_of

# SGLang's default `model` value: a request that leaves it out asks for the served model.
DEFAULT_MODEL_NAME = "default"
UNSUPPORTED = ("embed_override_token_id", "query_embed_overrides", "item_embed_overrides")


class ScoringRequest(BaseModel):
    query: str | list[int] | None = Field(None, description="Query text or pre-tokenized token IDs")
    items: str | list[str] | list[list[int]] | None = Field(
        None, description="Item text(s) or pre-tokenized token IDs")
    embed_override_token_id: int | None = Field(None, description="Not supported by Brew (must be left out)")
    query_embed_overrides: list[list[float]] | None = Field(None, description="Not supported by Brew")
    item_embed_overrides: list[list[list[float]] | None] | None = Field(None, description="Not supported by Brew")
    label_token_ids: list[int] | None = Field(None, description="Token IDs to compute probabilities for")
    apply_softmax: bool = False
    item_first: bool = False
    return_pooled_hidden_states: bool = Field(False, description="Not supported by Brew (must be false)")
    model: str = DEFAULT_MODEL_NAME


class ScoringResponse(BaseModel):
    scores: list[list[float]] = Field(
        description="One list per item: probabilities in the order of label_token_ids")
    pooled_hidden_states: list[list[float] | None] | None = None
    model: str
    usage: UsageInfo | None = None
    object: str = "scoring"


def query_items(request: ScoringRequest, request_id: str) -> QueryItemsRequest:
    """The raw request; InvalidRequestError naming a field SGLang also needs,
    or one Brew does not support."""
    for name in UNSUPPORTED:
        if getattr(request, name) is not None:
            raise InvalidRequestError(f"{name} is not supported: Brew scores token ids only; leave it out")
    if request.return_pooled_hidden_states:
        raise InvalidRequestError("return_pooled_hidden_states is not supported: Brew returns label "
                                  "probabilities only; leave it out or false")
    for name in ("query", "items", "label_token_ids"):
        if getattr(request, name) is None:
            raise InvalidRequestError(f"{name} is required")
    assert request.query is not None and request.items is not None and request.label_token_ids is not None
    items = [request.items] if isinstance(request.items, str) else request.items
    return QueryItemsRequest(
        request_id=request_id,
        query=request.query if isinstance(request.query, str) else tuple(request.query),
        items=tuple(item if isinstance(item, str) else tuple(item) for item in items),
        label_ids=tuple(request.label_token_ids),
        item_first=request.item_first,
    )


def scoring_response(request: ScoringRequest, response: QueryItemsResponse) -> ScoringResponse:
    return ScoringResponse(
        scores=[list(label_scores(item.label_logprobs, request.apply_softmax)) for item in response.items],
        model=response.model, usage=usage_of(response),
    )

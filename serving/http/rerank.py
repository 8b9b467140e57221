"""POST /v1/rerank: the Jina/Cohere rerank shape, scored through a task template.

The request has a `query`, `documents` (text, or `{text}` objects as Cohere
and Jina also take), `top_n` (default: all) and `return_documents` (default
true, as Jina's and SGLang's). The answer is vLLM's and Jina's:
`{id, model, usage, results: [{index, relevance_score, document?}]}`, the
results sorted by score, best first.

Unlike the raw scoring APIs, a rerank request carries no prompt: it is
rendered by a task of the prompts directory (the bundled `rerank`, or the
task the request's `model` field names, or the server's `--rerank-task`),
as a ScoreRequest whose member's profile holds the `query` and whose
candidates are the documents (field `text`, item id = the document's
index). A prompt author changes how documents are judged by editing that
template, not the client.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from brew.types import Item, Member, ScoreRequest, ScoreResponse, TaskRequest


class RerankDocument(BaseModel):
    text: str


class RerankRequest(BaseModel):
    model: str | None = Field(None, description="The task that judges relevance (default: the server's "
                                                "--rerank-task); the served model's name means the default too")
    query: str
    documents: list[str | RerankDocument]
    top_n: int | None = Field(None, ge=0, description="Return the best N documents (0 or left out: all)")
    return_documents: bool = True


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


def task_of(request: RerankRequest, served_model: str | None, default_task: str) -> str:
    """The task a request is scored with."""
    if request.model is None or request.model == served_model:
        return default_task
    return request.model


def score_request(request: RerankRequest, task: str, request_id: str) -> ScoreRequest:
    texts = _texts(request)
    return ScoreRequest(
        request_id=request_id,
        member=Member(member_id="", profile={"query": request.query}),
        tasks=(TaskRequest(task, tuple(Item(str(index), "document", {"text": text})
                                       for index, text in enumerate(texts))),),
    )


def rerank_response(request: RerankRequest, response: ScoreResponse) -> RerankResponse:
    (result,) = response.results
    texts = _texts(request)
    ranked = sorted(((int(c.item_id), c.score) for c in result.candidates), key=lambda pair: -pair[1])
    if request.top_n:
        ranked = ranked[:request.top_n]
    return RerankResponse(
        id=f"rerank-{response.request_id or uuid.uuid4().hex}",
        model=response.model,
        usage=RerankUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
        results=[RerankResult(index=index, relevance_score=score,
                              document=RerankDocument(text=texts[index]) if request.return_documents else None)
                 for index, score in ranked],
    )


def _texts(request: RerankRequest) -> list[str]:
    return [doc if isinstance(doc, str) else doc.text for doc in request.documents]

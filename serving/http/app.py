"""The FastAPI application of the HTTP/JSON API: routes that translate, and nothing else.

Each scoring route reads its body (pydantic, or the proto's JSON mapping),
hands the service the request's shape and a decode step, and writes the
service's domain answer in its peer's response shape. Every step of a
request (readiness, limits, the default deadline, admission, rendering or
tokenizing, the queue, the engine, metrics) is the service's
(serving.service), exactly as for gRPC; errors are mapped by
serving.http.errors. The OpenAPI page is at /docs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from brew.errors import BrewError, InvalidRequestError
from serving.config import ServerConfig
from serving.http import native, rerank, sglang, vllm
from serving.http.edge import ClientDisconnected, Edge, JsonRoute, deadline_of, until_disconnected
from serving.http.errors import error_body, error_response, status_for
from serving.http.openai import check_model
from serving.limits import RequestShape
from serving.service import QUERY_ITEMS_TASK, ScoringService

log = logging.getLogger(__name__)

# The status nginx and others log for a client that left before its answer.
CLIENT_CLOSED_REQUEST = 499
# A validation failure lists at most this many problems (a huge array can have thousands).
MAX_LISTED_PROBLEMS = 5
# How pydantic names the member of a union in an error's location: `str`, `list[int]`, `RerankDocument`.
_UNION_MEMBER = re.compile(r"[a-z]+\[.*\]|str|int|float|bool|[A-Z]\w+")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    int(status): {"description": status.phrase, "content": {"application/json": {"example": error_body(
        status, "what went wrong and how to fix it")}}}
    for status in (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, HTTPStatus.TOO_MANY_REQUESTS,
                   HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT)
}


def json_answer(model: BaseModel, exclude_none: bool = False) -> Response:
    return Response(model.model_dump_json(exclude_none=exclude_none), media_type="application/json")


def create_app(service: ScoringService, config: ServerConfig, registry: CollectorRegistry,
               replica_name: Callable[[], str]) -> FastAPI:
    """The API over `service`, behind the edge (size, token, replica header)."""
    app = FastAPI(title="Brew", summary="LLM ranking-as-text: score candidates by label-token probabilities.",
                  version="1", docs_url="/docs", redoc_url=None)
    app.router.route_class = JsonRoute
    _add_error_handlers(app, service)
    app.add_middleware(Edge, max_body_bytes=config.max_message_bytes, token=config.auth_token,
                       replica_name=replica_name)

    def served_model() -> str | None:
        ranker = service.ranker
        return ranker.model_name if ranker is not None else None

    @app.post("/v1/brew/score", tags=["brew"], responses=ERROR_RESPONSES,
              summary="Score candidates: brew.v1.ScoreCandidatesRequest in the proto's JSON mapping")
    async def brew_score(request: Request, body: dict[str, Any] = Body(
            ..., description="brew.v1.ScoreCandidatesRequest in the proto's JSON mapping (examples/request.json)")
                         ) -> Response:
        scoring = service.score(native.request_shape(body), native.decoder(body), deadline_of(request))
        return JSONResponse(native.response_json(await until_disconnected(request, scoring)))

    @app.get("/v1/brew/tasks", tags=["brew"], summary="The loaded tasks (brew.v1.ListTasksResponse)")
    async def brew_tasks() -> Response:
        tasks, model = service.tasks()
        return JSONResponse(native.tasks_json(tasks, model))

    @app.post("/v1/score", tags=["SGLang"], response_model=sglang.ScoringResponse, responses=ERROR_RESPONSES,
              summary="SGLang's scoring API: label-token probabilities of query + item")
    async def sglang_score(body: sglang.ScoringRequest, request: Request) -> Response:
        check_model(body.model, served_model() or body.model, also=(sglang.DEFAULT_MODEL_NAME,))
        items = 0 if body.items is None else 1 if isinstance(body.items, str) else len(body.items)
        shape = RequestShape("", ((QUERY_ITEMS_TASK, items),), 0)
        response = await until_disconnected(request, service.score_query_items(
            shape, lambda: sglang.query_items(body, ""), deadline_of(request)))
        return json_answer(sglang.scoring_response(body, response))

    @app.post("/generative_scoring", tags=["vLLM"], response_model=vllm.GenerativeScoringResponse,
              responses=ERROR_RESPONSES,
              summary="vLLM's generative scoring API: the probability of label_token_ids[0] after query + item")
    async def vllm_generative_scoring(body: vllm.GenerativeScoringRequest, request: Request) -> Response:
        check_model(body.model, served_model() or body.model)
        shape = RequestShape(body.request_id, ((QUERY_ITEMS_TASK, len(body.items)),), 0)
        response = await until_disconnected(request, service.score_query_items(
            shape, lambda: vllm.query_items(body), deadline_of(request)))
        return json_answer(vllm.generative_scoring_response(body, response))

    @app.post("/v1/rerank", tags=["rerank"], response_model=rerank.RerankResponse, responses=ERROR_RESPONSES,
              summary="Rerank documents for a query (Jina/Cohere shape), through a task template")
    async def rerank_documents(body: rerank.RerankRequest, request: Request) -> Response:
        task = rerank.task_of(body, served_model(), config.rerank_task)
        shape = RequestShape("", ((task, len(body.documents)),), 0)
        response = await until_disconnected(request, service.score(
            shape, lambda: rerank.score_request(body, task, ""), deadline_of(request)))
        return json_answer(rerank.rerank_response(body, response), exclude_none=True)  # no document: no key

    @app.get("/health", tags=["probes"], summary="200 while serving, else 503 with the reason")
    async def health() -> Response:
        lifecycle = service.lifecycle
        if lifecycle.serving:
            return JSONResponse({"status": "serving"})
        return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"server not ready: {lifecycle.reason}")

    @app.get("/live", tags=["probes"], summary="200 while the process is up")
    async def live() -> Response:
        return JSONResponse({"status": "alive"})

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (the same as on --metrics-port)")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _add_error_handlers(app: FastAPI, service: ScoringService) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = error.errors()
        lines = list(dict.fromkeys(_problem(p) for p in problems))
        message = "; ".join(lines[:MAX_LISTED_PROBLEMS])
        if len(lines) > MAX_LISTED_PROBLEMS:
            message += f"; and {len(lines) - MAX_LISTED_PROBLEMS} more"
        service.refused(InvalidRequestError(message))
        return error_response(HTTPStatus.BAD_REQUEST, message, _param(problems[0]) if problems else None)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, error: HTTPException) -> Response:
        return error_response(HTTPStatus(error.status_code), str(error.detail))

    @app.exception_handler(ClientDisconnected)
    async def gone(request: Request, error: ClientDisconnected) -> Response:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(BrewError)
    async def failed(request: Request, error: BrewError) -> Response:
        status = status_for(error)
        if status is HTTPStatus.INTERNAL_SERVER_ERROR:
            log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(status, str(error))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(error).__name__}")


def _problem(problem: dict[str, Any]) -> str:
    """One pydantic problem as a person reads it: `label_token_ids.1: Input should be a valid integer`."""
    where = _param(problem) or "body"
    detail = problem.get("ctx", {}).get("error") if problem.get("type") == "json_invalid" else None
    message = problem.get("msg", "invalid")
    return f"{where}: {message}" + (f" ({detail} at character {problem['loc'][-1]})" if detail else "")


def _param(problem: dict[str, Any]) -> str | None:
    """The field a problem is about, dotted (`items.2.0`); None for the body as a whole.
    The names pydantic gives the members of a union (`list[str]`) are left out."""
    loc = [str(part) for part in problem.get("loc", ()) if part != "body" and not _UNION_MEMBER.fullmatch(str(part))]
    if problem.get("type") == "json_invalid":
        return None
    return ".".join(loc) or None

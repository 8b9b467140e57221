"""The HTTP status table and the error body every HTTP answer of a failure carries.

| failure                                         | status |
|-------------------------------------------------|--------|
| bad JSON, a bad field, a request over a limit   | 400    |
| missing or wrong bearer token                   | 401    |
| the model a request names is not served         | 404    |
| the body is larger than max_message_bytes       | 413    |
| the body is not JSON (content-type)             | 415    |
| queue full, overloaded (with Retry-After)       | 429    |
| not ready, draining, engine failed              | 503    |
| deadline passed or cannot be met, shed          | 504    |
| a broken task definition, anything else         | 500 (logged with its traceback) |

The same transport-neutral errors as gRPC's table (serving.status) decide it:
only the codes are HTTP's. The body is the OpenAI-style error object SGLang
answers (`{object: "error", message, type, param, code}`), `type` the status
phrase as vLLM writes it (`BadRequestError`), `param` the field at fault when
one is known.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse

from brew.errors import InvalidRequestError
from serving.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    QueueFullError,
    ShuttingDownError,
)

# First match wins; subclasses before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], HTTPStatus], ...] = (
    (InvalidRequestError, HTTPStatus.BAD_REQUEST),
    (QueueFullError, HTTPStatus.TOO_MANY_REQUESTS),
    (DeadlineExceededError, HTTPStatus.GATEWAY_TIMEOUT),
    (ShuttingDownError, HTTPStatus.SERVICE_UNAVAILABLE),
    (NotReadyError, HTTPStatus.SERVICE_UNAVAILABLE),
    (EngineFailedError, HTTPStatus.SERVICE_UNAVAILABLE),
)

# How long a refused caller should wait before it tries again (429's Retry-After, seconds).
RETRY_AFTER_SECONDS = 1

ERROR_TYPES = {
    HTTPStatus.INTERNAL_SERVER_ERROR: "InternalServerError",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RequestTooLargeError",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "UnsupportedMediaTypeError",
}


def status_for(error: BaseException) -> HTTPStatus:
    """The status of a service error (the edge's own failures carry theirs: HTTPException)."""
    for kind, status in STATUS_TABLE:
        if isinstance(error, kind):
            return status
    return HTTPStatus.INTERNAL_SERVER_ERROR


def error_type(status: HTTPStatus) -> str:
    """`BadRequestError`, `TooManyRequestsError`, ...: vLLM's names for the status."""
    return ERROR_TYPES.get(status) or status.phrase.title().replace(" ", "").replace("-", "") + "Error"


def error_body(status: HTTPStatus, message: str, param: str | None = None) -> dict[str, object]:
    return {"object": "error", "message": message, "type": error_type(status), "param": param,
            "code": int(status)}


def error_response(status: HTTPStatus, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The error object as an answer; a 429 says when to retry, a 401 how to authenticate."""
    headers = dict(headers or {})
    if status is HTTPStatus.TOO_MANY_REQUESTS:
        headers.setdefault("retry-after", str(RETRY_AFTER_SECONDS))
    if status is HTTPStatus.UNAUTHORIZED:
        headers.setdefault("www-authenticate", "Bearer")
    return JSONResponse(error_body(status, message, param), status_code=int(status), headers=headers)

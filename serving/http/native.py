"""POST /v1/brew/score and GET /v1/brew/tasks: brew.v1 in the proto's JSON mapping.

The body is a ScoreCandidatesRequest written as `brew score --request` and
`grpcurl -d @` take it (camelCase or snake_case), the answer a
ScoreCandidatesResponse in the same mapping: the same request gets the same
scores over gRPC and over HTTP.

The shape the service checks first (tasks, candidate counts, history length)
is read from the parsed JSON, tolerating any type, in O(tasks); the JSON is
read into the domain request in the service's decode step, off the event
loop (brew.wire_json: as protobuf reads it, a field of the wrong type named
by protobuf's own message).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format

from brew.errors import InvalidRequestError
from brew.tasks import TaskRegistry
from brew.types import ScoreRequest, ScoreResponse
from brew.wire import list_tasks_response, response_to_proto
from brew.wire_json import request_from_json
from serving.limits import RequestShape


def request_shape(body: Any) -> RequestShape:
    """The shape of a request's JSON; what is not there or not a list counts as none."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("the request must be a JSON object (brew.v1.ScoreCandidatesRequest)")
    tasks = []
    for task in _list(body.get("tasks")):
        task = task if isinstance(task, Mapping) else {}
        name = task.get("task")
        tasks.append((name if isinstance(name, str) else "", len(_list(task.get("candidates")))))
    member = body.get("member")
    history = _list(member.get("history")) if isinstance(member, Mapping) else []
    request_id = _field(body, "requestId", "request_id")
    return RequestShape(request_id if isinstance(request_id, str) else "", tuple(tasks), len(history))


def decoder(body: Mapping[str, Any]) -> Callable[[], ScoreRequest]:
    return lambda: request_from_json(body)


def response_json(response: ScoreResponse) -> dict[str, Any]:
    return json_format.MessageToDict(response_to_proto(response))


def tasks_json(tasks: TaskRegistry, model: str) -> dict[str, Any]:
    return json_format.MessageToDict(list_tasks_response(tasks, model))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _field(body: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in body:
            return body[name]
    return None

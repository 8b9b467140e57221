"""A row's payload -> the ScoreCandidatesRequest message, or the reason it is none.

A JSONL line and a Parquet `request` string are the proto's JSON mapping as
`brew score --request` reads it (brew.wire.parse_request_json); a Parquet
row of columns is the same mapping as nested values. Every failure is an
InvalidRequestError whose message says what to fix: a bad row is the
caller's to correct, and the job goes on without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from brew.errors import InvalidRequestError
from brew.v1 import ranking_pb2 as pb
from brew.wire import parse_request_json


def parse_row(payload: bytes | str | Mapping[str, Any]) -> pb.ScoreCandidatesRequest:
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidRequestError(f"the line is not UTF-8 text ({error}); write the file as UTF-8") from None
    if isinstance(payload, str):
        return parse_request_json(payload)
    try:
        return json_format.ParseDict(_mapping(payload), pb.ScoreCandidatesRequest())
    except json_format.ParseError as error:
        raise InvalidRequestError(f"row does not match brew.v1.ScoreCandidatesRequest: {error}") from None


def _mapping(value: Any) -> Any:
    """Arrow's Python values as the JSON mapping: a missing (null) field is
    left out, a map column (a list of key/value pairs) is an object, and a
    timestamp column is RFC 3339 text (a naive one is taken as UTC)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, Mapping):
        return {key: _mapping(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {key: _mapping(item) for key, item in value if item is not None}
        return [_mapping(item) for item in value]
    return value

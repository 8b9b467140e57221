import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Item(_message.Message):
    __slots__ = ("item_id", "entity_type", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    entity_type: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, item_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("action", "item", "time")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    action: str
    item: Item
    time: _timestamp_pb2.Timestamp
    def __init__(self, action: _Optional[str] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("member_id", "profile", "history")
    class ProfileEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    profile: _containers.ScalarMap[str, str]
    history: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, member_id: _Optional[str] = ..., profile: _Optional[_Mapping[str, str]] = ..., history: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class TaskCandidates(_message.Message):
    __slots__ = ("task", "candidates")
    TASK_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    task: str
    candidates: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, task: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ScoreCandidatesRequest(_message.Message):
    __slots__ = ("request_id", "member", "tasks")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    member: Member
    tasks: _containers.RepeatedCompositeFieldContainer[TaskCandidates]
    def __init__(self, request_id: _Optional[str] = ..., member: _Optional[_Union[Member, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskCandidates, _Mapping]]] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("item_id", "score", "label_probs", "label_logprobs")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_PROBS_FIELD_NUMBER: _ClassVar[int]
    LABEL_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    label_probs: _containers.RepeatedScalarFieldContainer[float]
    label_logprobs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., label_probs: _Optional[_Iterable[float]] = ..., label_logprobs: _Optional[_Iterable[float]] = ...) -> None: ...

class TokenCounts(_message.Message):
    __slots__ = ("prefix_tokens", "prompt_tokens", "cached_prompt_tokens")
    PREFIX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prefix_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int
    def __init__(self, prefix_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class TaskScores(_message.Message):
    __slots__ = ("task", "template_version", "labels", "positive_label", "scores", "tokens")
    TASK_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    task: str
    template_version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    positive_label: str
    scores: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    tokens: TokenCounts
    def __init__(self, task: _Optional[str] = ..., template_version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., positive_label: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ..., tokens: _Optional[_Union[TokenCounts, _Mapping]] = ...) -> None: ...

class ServerTiming(_message.Message):
    __slots__ = ("queue_seconds", "prepare_seconds", "engine_seconds", "total_seconds")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREPARE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    prepare_seconds: float
    engine_seconds: float
    total_seconds: float
    def __init__(self, queue_seconds: _Optional[float] = ..., prepare_seconds: _Optional[float] = ..., engine_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class ScoreCandidatesResponse(_message.Message):
    __slots__ = ("request_id", "results", "model", "timing")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[TaskScores]
    model: str
    timing: ServerTiming
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TaskScores, _Mapping]]] = ..., model: _Optional[str] = ..., timing: _Optional[_Union[ServerTiming, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("name", "description", "version", "labels", "positive_label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    positive_label: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., positive_label: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "model")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    model: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class ReloadPromptsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadPromptsResponse(_message.Message):
    __slots__ = ("tasks", "changed", "added", "removed")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskInfo]
    changed: _containers.RepeatedScalarFieldContainer[str]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskInfo, _Mapping]]] = ..., changed: _Optional[_Iterable[str]] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

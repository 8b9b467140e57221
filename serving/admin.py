"""brew.v1.AdminService: operator actions, translated to the server's own.

Only ReloadPrompts for now; the work is serving.reload's. A failed check is
FAILED_PRECONDITION with every lint error in the message (the old prompts keep
serving), a reload before the model is up is UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from brew.wire import task_info
from serving.errors import NotReadyError, PromptReloadError
from serving.reload import ReloadResult


class AdminServicer(ranking_pb2_grpc.AdminServiceServicer):
    def __init__(self, reload: Callable[[], Awaitable[ReloadResult]]) -> None:
        self._reload = reload

    async def ReloadPrompts(self, request: pb.ReloadPromptsRequest,
                            context: grpc.aio.ServicerContext) -> pb.ReloadPromptsResponse:
        try:
            result = await self._reload()
        except PromptReloadError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        except NotReadyError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        return pb.ReloadPromptsResponse(
            tasks=[task_info(result.tasks[name]) for name in sorted(result.tasks)],
            changed=result.changed, added=result.added, removed=result.removed,
        )

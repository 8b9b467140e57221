"""The OpenAI-style pieces the peer APIs share: token usage, the model check."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import HTTPException
from pydantic import BaseModel

from brew.query_items import QueryItemsResponse


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    # Brew generates no token: it reads the label log-probabilities at the prompt's end.
    completion_tokens: int | None = 0
    prompt_tokens_details: PromptTokensDetails | None = None


def usage_of(response: QueryItemsResponse) -> UsageInfo:
    """Prompt tokens scored, and how many of them the prefix cache served."""
    return UsageInfo(prompt_tokens=response.prompt_tokens, total_tokens=response.prompt_tokens,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=response.cached_tokens))


def check_model(requested: str | None, served: str, also: tuple[str, ...] = ()) -> None:
    """404 unless `requested` is absent, the served model or one of `also`
    (SGLang's default name): as vLLM answers a model it does not serve."""
    if requested is None or requested == served or requested in also:
        return
    raise HTTPException(HTTPStatus.NOT_FOUND, f"The model `{requested}` does not exist; this server serves "
                                              f"`{served}`")

"""The slice of OpenAI's HTTP API that the server speaks: request models, responses, errors.

Requests are validated with pydantic; anything the server cannot honour (n > 1, tools,
penalties, streamed log-probabilities) is refused with a 400 rather than silently ignored. Field names, response
objects and the error body follow https://platform.openai.com/docs/api-reference.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jmed_edge.runtimes.logprobs import TOP_MAX


class RequestError(Exception):
    """Becomes an OpenAI-style error response: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # llama.cpp-style extension
    repeat_penalty: float = Field(1.0, gt=0)  # llama.cpp-style extension
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    user: str | None = None

    def refuse_unsupported(self) -> None:
        if self.n != 1:
            why = (
                "at temperature 0 every choice would be the same answer"
                if self.temperature == 0
                else "this server returns one choice per prompt"
            )
            raise RequestError(400, f"n must be 1 ({why}); send n: 1, or separate requests", param="n")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name):
                raise RequestError(400, f"{name} is not supported; use repeat_penalty instead", param=name)
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise RequestError(400, "at most 4 stop sequences are allowed", param="stop")

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(400, f"content parts of type {part.get('type')!r} are not supported; send text",
                                   param="messages")  # fmt: skip
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs is not None:
            check_top(self.top_logprobs, "top_logprobs")
            if not self.logprobs:
                raise RequestError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.logprobs and self.stream:
            raise RequestError(400, "logprobs are not streamed by this server; send stream: false",
                               param="logprobs")  # fmt: skip
        if self.tools or self.functions:
            raise RequestError(
                400, "tools and function calling are not supported by this server", param="tools"
            )
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise RequestError(400, "only response_format type 'text' is supported", param="response_format")

    def chat_messages(self) -> list[dict[str, str]]:
        # "developer" is OpenAI's newer name for the system role; chat templates know "system".
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top(self) -> int | None:
        """Alternatives to list per answer token, or None when no logprobs were asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None


def check_top(value: int, param: str) -> None:
    if not 0 <= value <= TOP_MAX:
        raise RequestError(400, f"{param} must be between 0 and {TOP_MAX} (the number of most likely tokens "
                           f"listed per position), not {value}", param=param)  # fmt: skip


class CompletionRequest(_Request):
    # A string, a list of strings, a list of token ids or a list of lists of token ids: checked
    # in ``prompts`` so that a mixed list gets one clear message, not a union's error list.
    prompt: Any
    max_tokens: int | None = Field(16, ge=0)  # OpenAI's default for /v1/completions; 0 scores only
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.suffix:
            raise RequestError(400, "suffix is not supported by this server", param="suffix")
        if self.best_of not in (None, 1):
            raise RequestError(400, "best_of must be 1", param="best_of")
        if self.logprobs is not None:
            check_top(self.logprobs, "logprobs")
        prompts = self.prompts()
        if self.stream and not self.is_plain:
            what = (
                "several prompts"
                if len(prompts) > 1
                else "token ids"
                if self.token_prompts
                else "echo or logprobs"
            )
            raise RequestError(
                400, f"a request with {what} is answered whole; send stream: false", param="stream"
            )

    def prompts(self) -> list[str | list[int]]:
        """The prompts in order; a 400 naming the problem for anything else."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not isinstance(prompt, list):
            raise RequestError(400, "prompt must be a string, a list of strings, a list of token ids or a list "
                               f"of lists of token ids, not {type(prompt).__name__}", param="prompt")  # fmt: skip
        if not prompt:
            raise RequestError(400, "prompt is an empty list; send at least one prompt", param="prompt")
        if all(_is_id(x) for x in prompt):
            return [list(prompt)]
        if all(isinstance(x, str) for x in prompt):
            return list(prompt)
        if all(isinstance(x, list) and all(_is_id(t) for t in x) for x in prompt):
            if not all(prompt):
                raise RequestError(400, f"prompt {[len(x) for x in prompt].index(0)} is an empty list of token "
                                   "ids", param="prompt")  # fmt: skip
            return [list(x) for x in prompt]
        raise RequestError(400, "prompt mixes kinds: send strings only, token ids only, or lists of token ids "
                           "only", param="prompt")  # fmt: skip

    @property
    def token_prompts(self) -> bool:
        return not isinstance(self.prompts()[0], str)

    @property
    def is_plain(self) -> bool:
        """One text prompt, no echo, no logprobs, at least one token: the streaming path."""
        return (isinstance(self.prompt, str) or (isinstance(self.prompt, list) and len(self.prompt) == 1
                and isinstance(self.prompt[0], str))) and not self.echo and self.logprobs is None \
            and self.max_tokens != 0  # fmt: skip

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_request(raw: bytes, model: type[_Request]) -> Any:
    """Parse and validate a JSON body; malformed or invalid input raises a 400 ``RequestError``."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}); send a JSON object",
                           code="invalid_json") from None  # fmt: skip
    if not isinstance(data, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise RequestError(400, f"invalid value for '{param}': {first['msg']}", param=param) from None
    request.refuse_unsupported()
    return request


# --- responses -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(runtime_reason: str) -> str:
    return "length" if runtime_reason == "length" else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip


def chat_response(rid: str, model: str, text: str, reason: str, use: dict[str, int],
                  logprobs: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": reason, "logprobs": logprobs}],
        "usage": use,
    }  # fmt: skip


def chat_chunk(
    rid: str, model: str, created: int, delta: dict[str, str], reason: str | None
) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}  # fmt: skip


def completion_response(rid: str, model: str, text: str, reason: str, use: dict[str, int]) -> dict[str, Any]:
    return completions_response(rid, model, [completion_choice(0, text, reason)], use)


def completion_choice(
    index: int, text: str, reason: str, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": logprobs}


def completions_response(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]
) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": use}  # fmt: skip


def completion_chunk(rid: str, model: str, created: int, text: str, reason: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}  # fmt: skip


def usage_chunk(rid: str, model: str, created: int, obj: str, use: dict[str, int]) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "jmed-edge"}

"""The OpenAI-compatible application: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/models`` and ``/health`` over a pool of model instances.

Every error, from a bad key to a prompt longer than the context, is answered in OpenAI's error
shape and the server keeps serving; only the request at fault fails.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jmed_edge.errors import JmedError, did_you_mean
from jmed_edge.runtimes.base import GenerationStats, Runtime, SamplingParams
from jmed_edge.serve import protocol as p
from jmed_edge.serve.config import ServeSettings
from jmed_edge.serve.engine import Prepared, RuntimePool, fit_to_context
from jmed_edge.serve.scoring import chat_logprobs, score_prompts
from jmed_edge.serve.security import Guard

log = logging.getLogger(__name__)
content_log = logging.getLogger("jmed_edge.serve.content")


def create_app(runtimes: Sequence[Runtime], settings: ServeSettings) -> FastAPI:
    """The ASGI app serving ``runtimes`` (instances of one model) under ``settings``."""
    pool = RuntimePool(runtimes, settings.queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        pool.open()
        yield
        if not pool.stop(timeout=30):
            log.warning("a generation was still running at shutdown")

    # No /docs: Swagger UI would load scripts from a CDN, and nothing here may reach the network.
    app = FastAPI(title="jmed-edge", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.pool = pool
    app.state.settings = settings
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes,
                       loopback_only=settings.loopback_only)  # fmt: skip
    _add_error_handlers(app)

    def check_model(name: str | None) -> None:
        if name is not None and name != settings.model_name:
            raise p.RequestError(
                404,
                f"the model {name!r} does not exist here{did_you_mean(name, [settings.model_name])}; "
                f"this server serves {settings.model_name!r} (see /v1/models)",
                param="model",
                code="model_not_found",
            )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [p.model_card(settings.model_name, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return p.model_card(settings.model_name, created)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req: p.ChatRequest = p.parse_request(await request.body(), p.ChatRequest)
        check_model(req.model)
        messages = req.chat_messages()
        params = _sampling(req)

        def prepare(runtime: Runtime) -> Prepared:
            try:
                prompt = runtime.render_chat(messages)
            except Exception as exc:  # the template's own checks (role order, ...) reject the input
                raise p.RequestError(400, f"the model's chat template rejected the messages: {exc}",
                                     param="messages") from exc  # fmt: skip
            return fit_to_context(runtime, prompt, params, req.token_budget, settings.max_tokens_limit)

        if settings.log_content:
            content_log.info("chat request: %s", _json(messages))
        if req.logprobs:
            return await _chat_with_logprobs(request, pool, settings, prepare, req)
        return await _respond(request, pool, settings, prepare, req, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req: p.CompletionRequest = p.parse_request(await request.body(), p.CompletionRequest)
        check_model(req.model)
        params = _sampling(req)
        if not req.is_plain:  # echo, logprobs, several prompts, token ids, max_tokens 0
            return await _score(request, pool, settings, req, params)
        prompt = req.prompt_text()

        def prepare(runtime: Runtime) -> Prepared:
            return fit_to_context(runtime, prompt, params, req.token_budget, settings.max_tokens_limit)

        if settings.log_content:
            content_log.info("completion request: %s", _json(prompt))
        return await _respond(request, pool, settings, prepare, req, chat=False)

    return app


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sampling(req: Any) -> SamplingParams:
    # Without a seed, sampled answers differ between requests, as with OpenAI's API.
    seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
    return SamplingParams(max_tokens=1, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                          repeat_penalty=req.repeat_penalty, seed=seed, stop=tuple(req.stop_list))  # fmt: skip


async def _respond(request: Request, pool: RuntimePool, settings: ServeSettings,
                   prepare: Callable[[Runtime], Prepared], req: Any, *, chat: bool):  # fmt: skip
    generation = await pool.generate(prepare, gone=request.is_disconnected)
    try:
        prepared = await generation.ready()
    except JmedError as exc:
        raise p.RequestError(400, str(exc)) from exc
    model = settings.model_name
    rid = p.new_id("chatcmpl" if chat else "cmpl")

    def finish() -> dict[str, int]:
        use = p.usage(prepared.prompt_tokens, generation.stats.completion_tokens)
        request.state.usage = use
        return use

    if not req.stream:
        try:
            text = await generation.text()
        except JmedError as exc:  # a limit the runtime itself enforces
            raise p.RequestError(400, str(exc)) from exc
        use = finish()
        if settings.log_content:
            content_log.info("%s answer: %s", rid, _json(text))
        build = p.chat_response if chat else p.completion_response
        return JSONResponse(build(rid, model, text, p.finish_reason(generation.finish_reason), use))

    async def events():
        born = int(time.time())
        parts: list[str] = []

        def chunk(text: str, reason: str | None) -> str:
            if chat:
                delta = {"content": text} if reason is None else {}
                return _json(p.chat_chunk(rid, model, born, delta, reason))
            return _json(p.completion_chunk(rid, model, born, text, reason))

        try:
            if chat:
                yield _json(p.chat_chunk(rid, model, born, {"role": "assistant", "content": ""}, None))
            async for piece in generation.pieces():
                parts.append(piece)
                yield chunk(piece, None)
            yield chunk("", p.finish_reason(generation.finish_reason))
            use = finish()
            if req.include_usage:
                obj = "chat.completion.chunk" if chat else "text_completion"
                yield _json(p.usage_chunk(rid, model, born, obj, use))
            yield "[DONE]"
        except Exception as exc:  # headers are sent: report the failure inside the stream
            log.exception("generation failed in request %s", rid)
            yield _json(p.error_body(f"generation failed: {type(exc).__name__}: {exc}", "server_error"))
        finally:
            generation.cancel()
            finish()
            if settings.log_content:
                content_log.info("%s answer: %s", rid, _json("".join(parts)))

    return EventSourceResponse(events(), ping=15)


async def _score(request: Request, pool: RuntimePool, settings: ServeSettings, req: p.CompletionRequest,
                 params: SamplingParams) -> JSONResponse:  # fmt: skip
    if settings.log_content:
        content_log.info("completion request: %s", _json(req.prompt))
    scored = await pool.run(lambda runtime: score_prompts(runtime, req, settings.max_tokens_limit, params),
                            gone=request.is_disconnected)  # fmt: skip
    use = p.usage(scored.prompt_tokens, scored.completion_tokens)
    request.state.usage = use
    rid = p.new_id("cmpl")
    if settings.log_content:
        content_log.info("%s answer: %s", rid, _json([c["text"] for c in scored.choices]))
    return JSONResponse(p.completions_response(rid, settings.model_name, scored.choices, use))


async def _chat_with_logprobs(request: Request, pool: RuntimePool, settings: ServeSettings,
                              prepare: Callable[[Runtime], Prepared], req: p.ChatRequest) -> JSONResponse:  # fmt: skip
    top = req.top or 0

    def job(runtime: Runtime) -> tuple[str, GenerationStats, dict[str, Any]]:
        if not getattr(runtime, "reports_logprobs", False):
            raise p.RequestError(400, f"logprobs need a GGUF artifact (the llama.cpp runtime); this server runs "
                                 f"{runtime.name}", param="logprobs")  # fmt: skip
        prepared = prepare(runtime)
        prepared.params.logprobs = top
        stats = GenerationStats()
        try:
            text = "".join(runtime.generate(prepared.prompt, prepared.params, stats))
        except JmedError as exc:
            raise p.RequestError(400, str(exc)) from exc
        return text, stats, chat_logprobs(runtime, stats.tokens[: stats.completion_tokens], top)

    text, stats, logprobs = await pool.run(job, gone=request.is_disconnected)
    use = p.usage(stats.prompt_tokens, stats.completion_tokens)
    request.state.usage = use
    rid = p.new_id("chatcmpl")
    if settings.log_content:
        content_log.info("%s answer: %s", rid, _json(text))
    reason = p.finish_reason(stats.finish_reason or "stop")
    return JSONResponse(p.chat_response(rid, settings.model_name, text, reason, use, logprobs))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(p.RequestError)
    async def request_error(_: Request, exc: p.RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no such endpoint {request.url.path}; the API is /v1/chat/completions, /v1/completions, /v1/models"
        else:
            message = str(exc.detail)
        return JSONResponse(p.error_body(message, "invalid_request_error"), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        return JSONResponse(p.error_body(f"internal server error ({type(exc).__name__}); see the server log",
                                         "server_error"), status_code=500)  # fmt: skip

"""Model instances shared by concurrent requests: one request per instance, a bounded queue.

A runtime (one loaded model) is not thread-safe, so each request borrows a whole instance from
the pool for the time of its generation; ``--max-concurrency`` instances answer at once,
``--queue`` more requests wait, and any beyond that are refused at once with a 429. The model
code (templating, tokenizing, generating) runs on a worker thread that returns the instance to
the pool itself when it has finished, so a cancelled or disconnected request can never hand an
instance to the next one while the model is still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jmed_edge.chat.stream import END, Failed, WorkerStream
from jmed_edge.runtimes.base import GenerationStats, Runtime, SamplingParams
from jmed_edge.serve.protocol import RequestError

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A request ready to generate: the exact prompt text and the (clamped) sampling settings."""

    prompt: str
    params: SamplingParams
    prompt_tokens: int


def fit_to_context(runtime: Runtime, prompt: str, params: SamplingParams, requested: int | None,
                   limit: int) -> Prepared:  # fmt: skip
    """Count the prompt's tokens and clamp the answer budget to the limit and the context.

    A prompt that leaves no room for even one token is a 400; it is never truncated silently.
    """
    n_prompt = len(runtime.tokenize(prompt, add_special=True))
    ctx = int(runtime.context_length)
    if n_prompt >= ctx:
        raise RequestError(
            400,
            f"the prompt is {n_prompt} tokens but the model's context is {ctx} tokens; "
            "shorten the prompt or the conversation",
            param="messages",
            code="context_length_exceeded",
        )
    budget = min(limit if requested is None else requested, limit, ctx - n_prompt)
    params.max_tokens = budget
    return Prepared(prompt, params, n_prompt)


class ServerBusy(RequestError):
    def __init__(self, running: int, queued: int) -> None:
        super().__init__(
            429,
            f"the server is busy ({running} request(s) answering, {queued} waiting, the queue is full); "
            "retry shortly",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "1"},
        )


class RuntimePool:
    """Hands out model instances to requests on the event loop; see the module docstring."""

    def __init__(self, runtimes: Sequence[Runtime], queue_size: int) -> None:
        if not runtimes:
            raise ValueError("a pool needs at least one runtime")
        self.runtimes = list(runtimes)
        self.queue_size = queue_size
        self._free: asyncio.Queue[Runtime] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admitted = 0
        self._workers: set[WorkerStream] = set()

    def open(self) -> None:
        """Bind to the running event loop (called at server start-up)."""
        self._loop = asyncio.get_running_loop()
        self._free = asyncio.Queue()
        for runtime in self.runtimes:
            self._free.put_nowait(runtime)
        self._admitted = 0

    @property
    def capacity(self) -> int:
        return len(self.runtimes) + self.queue_size

    @property
    def running(self) -> int:
        return len(self.runtimes) - (self._free.qsize() if self._free else len(self.runtimes))

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self.running)

    async def _acquire(self) -> Runtime:
        assert self._free is not None, "RuntimePool.open() was not called"
        if self._admitted >= self.capacity:
            raise ServerBusy(self.running, self.waiting)
        self._admitted += 1
        try:
            return await self._free.get()
        except BaseException:
            self._admitted -= 1
            raise

    def _release(self, runtime: Runtime) -> None:
        assert self._free is not None
        self._admitted -= 1
        self._free.put_nowait(runtime)

    async def generate(
        self, prepare: Callable[[Runtime], Prepared], gone: Callable[[], Awaitable[bool]] | None = None
    ) -> Generation:
        """Borrow an instance (or raise ``ServerBusy``) and start ``prepare`` + generation on it.

        ``gone`` is asked once an instance is free: a client that left while its request waited
        in the queue costs no model time. Await ``Generation.ready()`` next: it raises the
        ``RequestError`` of a bad prompt before any response is sent.
        """
        runtime = await self._acquire()
        if gone is not None and await gone():
            self._release(runtime)
            raise RequestError(499, "the client closed the request while it waited in the queue")
        return Generation(self, runtime, prepare)

    async def run(
        self, job: Callable[[Runtime], Any], gone: Callable[[], Awaitable[bool]] | None = None
    ) -> Any:
        """Borrow an instance (or raise ``ServerBusy``), run ``job(instance)`` on a worker thread
        and return its result; what ``job`` raises is raised here."""
        runtime = await self._acquire()
        if gone is not None and await gone():
            self._release(runtime)
            raise RequestError(499, "the client closed the request while it waited in the queue")
        generation = Generation(self, runtime, None, work=lambda: iter((job(runtime),)))
        result = await generation._next()
        if result is END:  # cancelled before it ran
            raise RequestError(503, "the server is shutting down", type="server_error")
        return result

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel running generations and wait for them; True when every instance is idle."""
        for worker in list(self._workers):
            worker.cancel()
        return all(worker.join(timeout) for worker in list(self._workers))


class Generation:
    """One request's generation, streamed from the worker thread into the event loop."""

    def __init__(self, pool: RuntimePool, runtime: Runtime, prepare: Callable[[Runtime], Prepared] | None,
                 work: Callable[[], Any] | None = None) -> None:  # fmt: skip
        assert pool._loop is not None
        self.stats = GenerationStats()
        self._loop = pool._loop
        self._runtime = runtime
        self._prepare = prepare
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self.prepared: Prepared | None = None

        def on_exit() -> None:
            pool._workers.discard(self._worker)
            self._call_in_loop(pool._release, runtime)

        self._worker = WorkerStream(work or self._work, lambda item: self._call_in_loop(self._items.put_nowait, item),
                                    on_exit=on_exit)  # fmt: skip
        pool._workers.add(self._worker)
        self._worker.start()

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop has closed (server shut down): nobody is listening
            pass

    def _work(self):  # runs on the worker thread
        assert self._prepare is not None
        prepared = self._prepare(self._runtime)
        yield prepared
        yield from self._runtime.generate(prepared.prompt, prepared.params, self.stats)

    async def _next(self) -> Any:
        item = await self._items.get()
        if isinstance(item, Failed):
            raise item.error
        return item

    async def ready(self) -> Prepared:
        """The prepared prompt, or the ``RequestError`` (prompt too long, ...) that prevented it."""
        try:
            item = await self._next()
        except BaseException:
            self.cancel()
            raise
        if item is END:  # cancelled before preparing
            raise RequestError(503, "the server is shutting down", type="server_error")
        self.prepared = item
        if not self.stats.prompt_tokens:
            self.stats.prompt_tokens = item.prompt_tokens
        return item

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces as the model produces them; leaving the loop early stops the model."""
        try:
            while (item := await self._next()) is not END:
                yield item
        finally:
            self.cancel()

    async def text(self) -> str:
        return "".join([piece async for piece in self.pieces()])

    def cancel(self) -> None:
        self._worker.cancel()

    @property
    def finish_reason(self) -> str:
        return self.stats.finish_reason or "stop"

"""Run a runtime's generation on a worker thread so that the caller can stop it between tokens.

The caller (the terminal loop, an HTTP handler) never runs model code itself. A Ctrl-C or a
disconnected client only sets a flag; the worker sees it after the current token and closes the
runtime's generator, so a model call is never interrupted half-way (llama.cpp's KV cache and
torch state stay consistent for the next request).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any


class _End:
    """Marks the end of a stream."""


END = _End()


class Failed:
    """Carries an exception raised on the worker thread to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class WorkerStream:
    """Iterate ``make_pieces()`` on a daemon thread and pass each item to ``emit``.

    ``emit`` is called on the worker thread with every item, then with a ``Failed`` if the
    iterator raised, then with ``END``. ``on_exit`` runs on the worker thread once the runtime
    is no longer in use and before ``END`` is emitted, so a consumer that has seen ``END``
    knows the runtime is free again (a pool returns it to its free list in ``on_exit``).
    """

    def __init__(
        self,
        make_pieces: Callable[[], Iterator[Any]],
        emit: Callable[[Any], None],
        *,
        on_exit: Callable[[], None] | None = None,
        name: str = "jmed-generate",
    ) -> None:
        self._make_pieces = make_pieces
        self._emit = emit
        self._on_exit = on_exit
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> WorkerStream:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop after the current token (safe from any thread)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker; True when it has finished."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        pieces: Iterator[Any] | None = None
        try:
            pieces = self._make_pieces()
            for piece in pieces:
                if self._cancel.is_set():
                    break
                self._emit(piece)
        except BaseException as exc:  # handed to the consumer, which decides what to show
            self._emit(Failed(exc))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                try:
                    close()  # runs the runtime generator's own cleanup
                except Exception as exc:  # a failing cleanup must not lose the END marker
                    self._emit(Failed(exc))
            if self._on_exit is not None:
                self._on_exit()
            self._emit(END)


class SyncStream:
    """A ``WorkerStream`` consumed by plain iteration on the calling thread (the terminal chat).

    Iteration blocks in short waits, so a Ctrl-C reaches the main thread at once; the caller
    then calls ``cancel()`` and ``wait()``.
    """

    def __init__(self, make_pieces: Callable[[], Iterator[str]]) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker = WorkerStream(make_pieces, self._queue.put)
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if not self._started:
            self._started = True
            self._worker.start()
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                return
            if isinstance(item, Failed):
                self._worker.join()
                raise item.error
            yield item

    def cancel(self) -> None:
        self._worker.cancel()

    @property
    def cancelled(self) -> bool:
        return self._worker.cancelled

    def wait(self) -> None:
        """Block until the worker has released the runtime."""
        self._worker.join()

    @property
    def running(self) -> bool:
        """True while the worker may still be using the runtime."""
        return self._started and not self._worker.join(0)

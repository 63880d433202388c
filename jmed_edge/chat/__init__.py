"""``jmed-edge chat``: a streaming terminal chat over any artifact, through the runtime interface."""

from jmed_edge.chat.session import ChatSession, ContextOverflowError, Turn
from jmed_edge.chat.stream import SyncStream, WorkerStream

__all__ = ["ChatSession", "ContextOverflowError", "SyncStream", "Turn", "WorkerStream"]

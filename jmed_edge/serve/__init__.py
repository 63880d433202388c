"""``jmed-edge serve``: an OpenAI-compatible HTTP server over any artifact, safe by default."""

from jmed_edge.serve.app import create_app
from jmed_edge.serve.config import ServeSettings, is_loopback

__all__ = ["ServeSettings", "create_app", "is_loopback"]

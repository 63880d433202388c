"""jmed-edge: from a fine-tuned Japanese medical LLM to a small, fast, verified local artifact."""

__version__ = "0.1.0"

"""jmed-edge: from a fine-tuned Japanese medical LLM to a small, fast, verified local artifact."""

from jmed_edge.libraries import keep_offline

__version__ = "0.1.0"

# Before any dependency loads: peft imports bitsandbytes, whose CPU backend would otherwise ask
# a hub for compiled kernels on CPUs with AVX-512 BF16.
keep_offline()

"""Runtimes: one interface (``Runtime``) over torch, llama.cpp and onnxruntime artifacts."""

from jmed_edge.runtimes.base import (
    ContinuationScore,
    GenerationStats,
    Runtime,
    SamplingParams,
    open_runtime,
)

__all__ = ["ContinuationScore", "GenerationStats", "Runtime", "SamplingParams", "open_runtime"]

"""Tiny local fixtures (models, tokenizers) that tests and perf benchmarks build in seconds."""

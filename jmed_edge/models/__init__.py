"""Model folders: the embedded default model and helpers to inspect local Hugging Face folders."""

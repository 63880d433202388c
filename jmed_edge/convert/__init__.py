"""Conversion of Hugging Face models and adapters to GGUF and ONNX, each verified against its source."""

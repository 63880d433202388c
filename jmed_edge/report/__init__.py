"""The quantization accuracy report: which artifact to deploy, and what it costs, per language."""

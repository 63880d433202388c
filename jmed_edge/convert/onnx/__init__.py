"""ONNX conversion: Hugging Face folder -> onnxruntime-genai folders, verified against the source.

Public API: ``convert_to_onnx``, ``verify_onnx``, ``onnx_fingerprint``, ``OnnxOptions``, the
``EXPORTERS`` registry, and ``add_onnx_arguments`` / ``run_onnx_from_args`` for a command line.
"""

from jmed_edge.convert.onnx.cli import add_onnx_arguments, run_onnx_from_args
from jmed_edge.convert.onnx.convert import convert_to_onnx, estimate_bytes, onnx_fingerprint
from jmed_edge.convert.onnx.exporters import EXPORTERS, get_exporter
from jmed_edge.convert.onnx.options import OnnxOptions
from jmed_edge.convert.onnx.verify import SourceReference, VerificationResult, verify_onnx

__all__ = [
    "EXPORTERS",
    "OnnxOptions",
    "SourceReference",
    "VerificationResult",
    "add_onnx_arguments",
    "convert_to_onnx",
    "estimate_bytes",
    "get_exporter",
    "onnx_fingerprint",
    "run_onnx_from_args",
    "verify_onnx",
]

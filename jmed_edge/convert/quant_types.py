"""The llama.cpp quantization types jmed-edge offers, as a literal table.

Each row is a ``llama_ftype`` the quantizer (``llama_model_quantize``) takes. Rows come from
``QUANT_OPTIONS`` in llama.cpp's ``tools/quantize/quantize.cpp`` and the ``LLAMA_FTYPE_*``
enum in ``include/llama.h``, both at the version llama-cpp-python 0.3.36 vendors. ``bpw`` is
the nominal bits per weight of the type's main tensor format; real files differ a little
(mixes keep some tensors at higher precision, and rows not divisible by 256 fall back), so
each artifact records its measured bits per weight too.

``imatrix`` says how the type relates to an importance matrix:
  * ``required``: llama.cpp's own rule (``tensor_requires_imatrix``) or, for the other IQ
    types, this project's: IQ formats are designed around one and degrade badly without it.
  * ``used``: llama.cpp's quantizer for the type weighs its rounding error by the imatrix
    when given one (``ggml-quants.c``: the K-quants and Q4_0/Q4_1/Q5_0/Q5_1 take
    ``quant_weights``); ``--imatrix auto`` is the default for these, ``--imatrix none`` opts out.
    It matters most at 2-4 bits (default model, ja text: Q4_K_M KL 0.123 -> 0.089).
  * ``unused``: the quantizer ignores an imatrix (Q8_0's ``quantize_q8_0`` drops
    ``quant_weights``) or the type is not quantized at all (F32/F16/BF16).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from jmed_edge.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class QuantType:
    name: str  # llama.cpp's spelling, e.g. "Q4_K_M"
    ftype: int  # LLAMA_FTYPE_* value
    bpw: float  # nominal bits per weight
    imatrix: str  # required | used | unused
    note: str

    @property
    def is_float(self) -> bool:
        return self.name in FLOAT_TYPES

    @property
    def uses_imatrix(self) -> bool:
        return self.imatrix in ("required", "used")


# name, LLAMA_FTYPE id, nominal bpw, imatrix, llama.cpp's note (size / ppl delta at Llama-3-8B)
_ROWS = (
    ("F32", 0, 32.0, "unused", "26.00G @ 7B (reference only)"),
    ("F16", 1, 16.0, "unused", "14.00G, +0.0020 ppl @ Mistral-7B"),
    ("BF16", 32, 16.0, "unused", "14.00G, -0.0050 ppl @ Mistral-7B"),
    ("Q8_0", 7, 8.5, "unused", "7.96G, +0.0026 ppl @ Llama-3-8B"),
    ("Q6_K", 18, 6.5625, "used", "6.14G, +0.0217 ppl @ Llama-3-8B"),
    ("Q5_K_M", 17, 5.5, "used", "5.33G, +0.0569 ppl @ Llama-3-8B"),
    ("Q5_K_S", 16, 5.5, "used", "5.21G, +0.1049 ppl @ Llama-3-8B"),
    ("Q5_1", 9, 6.0, "used", "5.65G, +0.1062 ppl @ Llama-3-8B"),
    ("Q5_0", 8, 5.5, "used", "5.21G, +0.1316 ppl @ Llama-3-8B"),
    ("Q4_K_M", 15, 4.5, "used", "4.58G, +0.1754 ppl @ Llama-3-8B"),
    ("Q4_K_S", 14, 4.5, "used", "4.37G, +0.2689 ppl @ Llama-3-8B"),
    ("Q4_1", 3, 5.0, "used", "4.78G, +0.4511 ppl @ Llama-3-8B"),
    ("Q4_0", 2, 4.5, "used", "4.34G, +0.4685 ppl @ Llama-3-8B"),
    ("IQ4_NL", 25, 4.5, "required", "4.50 bpw non-linear quantization"),
    ("IQ4_XS", 30, 4.25, "required", "4.25 bpw non-linear quantization"),
    ("Q3_K_L", 13, 3.4375, "used", "4.03G, +0.5562 ppl @ Llama-3-8B"),
    ("Q3_K_M", 12, 3.4375, "used", "3.74G, +0.6569 ppl @ Llama-3-8B"),
    ("Q3_K_S", 11, 3.4375, "used", "3.41G, +1.6321 ppl @ Llama-3-8B"),
    ("IQ3_M", 27, 3.66, "required", "3.66 bpw quantization mix"),
    ("IQ3_S", 26, 3.44, "required", "3.44 bpw quantization"),
    ("IQ3_XS", 22, 3.3, "required", "3.3 bpw quantization"),
    ("IQ3_XXS", 23, 3.06, "required", "3.06 bpw quantization"),
    ("Q2_K", 10, 2.625, "used", "2.96G, +3.5199 ppl @ Llama-3-8B"),
    ("Q2_K_S", 21, 2.625, "required", "2.96G, +3.1836 ppl @ Llama-3-8B"),
    ("IQ2_M", 29, 2.7, "required", "2.7 bpw quantization"),
    ("IQ2_S", 28, 2.5, "required", "2.5 bpw quantization"),
    ("IQ2_XS", 20, 2.31, "required", "2.31 bpw quantization"),
    ("IQ2_XXS", 19, 2.06, "required", "2.06 bpw quantization"),
    ("IQ1_M", 31, 1.75, "required", "1.75 bpw quantization"),
    ("IQ1_S", 24, 1.56, "required", "1.56 bpw quantization"),
)
QUANT_TYPES: dict[str, QuantType] = {row[0]: QuantType(*row) for row in _ROWS}
# llama.cpp's own aliases (quantize.cpp: "alias for Q4_K_M" ...).
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# Types the converter writes directly (the base every quantized type is made from).
FLOAT_TYPES = ("F32", "F16", "BF16")
# What ``--quant`` means when none is given: the usual 8-bit and 4-bit pair.
DEFAULT_QUANTS = ("Q8_0", "Q4_K_M")


def quant_type(name: str) -> QuantType:
    """The row for ``name`` (any case, llama.cpp aliases accepted); unknown names suggest the closest."""
    key = name.strip().upper().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in QUANT_TYPES:
        known = [n.lower() for n in QUANT_TYPES]
        hint = did_you_mean(key.lower(), known)
        raise ConfigError(f'unknown quant type "{name}"{hint}; known: {", ".join(known)}')
    return QUANT_TYPES[key]


def parse_quants(spec: str | Iterable[str] | None) -> list[QuantType]:
    """``"q8_0,q4_k_m"`` or a list -> rows in the order given, duplicates dropped."""
    if spec is None:
        names: list[str] = list(DEFAULT_QUANTS)
    elif isinstance(spec, str):
        names = [part for part in spec.replace(" ", "").split(",") if part]
    else:
        names = [str(part) for part in spec]
    seen: dict[str, QuantType] = {}
    for name in names:
        qt = quant_type(name)
        seen.setdefault(qt.name, qt)
    return list(seen.values())

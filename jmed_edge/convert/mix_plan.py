"""Per-tensor GGUF types under a size budget: tensor groups, exact sizes and the search.

A *group* is one role (attn_q, ffn_down, token_embd, ...) in one band of consecutive layers;
every tensor of a group gets the same type. Sizes are exact: llama.cpp stores a tensor of
``n`` elements of a block type as ``n / block * type_size`` bytes (gguf-py
``GGML_QUANT_SIZES``) padded to the file's alignment, and a type whose block does not divide
a tensor's rows is replaced as llama.cpp's quantizer replaces it (``FALLBACK`` below), so the
plan states the type each tensor really gets and the search prices that.

The search is a multiple-choice knapsack: pick one (type) option per group, minimising the
summed KL increments under the byte budget, solved exactly by dynamic programming over a
discretised budget (Kellerer, Pferschy & Pisinger, *Knapsack Problems*, ch. 11; the same
additive-sensitivity allocation HAWQ-V3 solves with an ILP). Sizes are rounded *up* to the
grid, so a plan that fits the grid fits the real budget. The additive model (the KL of the mix
is the sum of each group's KL when it alone is quantized) is an approximation, checked against
the real KL of the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from jmed_edge.errors import ConfigError, did_you_mean

# Which role a weight tensor plays, by its GGUF name (gguf-py tensor_mapping.py's names).
ROLES: tuple[tuple[str, str], ...] = (
    ("token_embd", r"^token_embd\.weight$"),
    ("output", r"^output\.weight$"),
    ("attn_q", r"^blk\.\d+\.attn_q\.weight$"),
    ("attn_k", r"^blk\.\d+\.attn_k\.weight$"),
    ("attn_v", r"^blk\.\d+\.attn_v\.weight$"),
    ("attn_output", r"^blk\.\d+\.attn_output\.weight$"),
    ("ffn_gate", r"^blk\.\d+\.ffn_gate\.weight$"),
    ("ffn_up", r"^blk\.\d+\.ffn_up\.weight$"),
    ("ffn_down", r"^blk\.\d+\.ffn_down\.weight$"),
)
_LAYER = re.compile(r"^blk\.(\d+)\.")

# Candidate types a user may name (ggml type names, as llama-quantize's --tensor-type takes them).
CANDIDATES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")
# F16 lets a budget between all-Q8_0 and F16 buy back the groups Q8_0 still costs (on the 135M
# default the all-Q8_0 base alone is KL 0.0097 in Japanese, half of Q5_K_M's).
DEFAULT_CANDIDATES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16")
# Types whose quantizer needs an importance matrix (this project's rule for the IQ types, quant_types.py).
NEEDS_IMATRIX = ("IQ4_NL",)
# llama.cpp src/llama-quant.cpp tensor_type_fallback (vendored by llama-cpp-python 0.3.36): a type
# whose block does not divide a tensor's row length is replaced by this one; F16 when that fails too.
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
ALIGNMENT = 32  # GGUF default general.alignment


@dataclass(frozen=True)
class Tensor:
    name: str
    dims: tuple[int, ...]  # ggml order: dims[0] is the row length

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


@dataclass
class Group:
    name: str  # e.g. "ffn_down@0-9"
    role: str
    tensors: list[Tensor]


@dataclass
class Option:
    """One candidate type for a group, after llama.cpp's fallbacks, with its exact bytes."""

    requested: str
    types: dict[str, str]  # tensor name -> the type it really gets
    nbytes: int
    kl: float = 0.0  # measured KL increment over the all-Q8_0 base (below 0 for F16)

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.types.items()))


@dataclass
class Plan:
    choice: dict[str, Option]  # group name -> chosen option
    predicted_kl: float  # sum of increments (plus the base's KL, added by the caller)
    nbytes: int  # bytes of the grouped tensors
    fallbacks: list[str] = field(default_factory=list)

    def tensor_types(self) -> dict[str, str]:
        return {t: ty for opt in self.choice.values() for t, ty in opt.types.items()}


def type_sizes(name: str) -> tuple[int, int]:
    """(block size, bytes per block) of a ggml type."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[name]]


def effective_type(requested: str, row: int) -> str:
    """The type llama.cpp's quantizer gives a tensor with rows of ``row`` elements."""
    if row % type_sizes(requested)[0] == 0:
        return requested
    fallback = FALLBACK.get(requested, requested)
    return fallback if row % type_sizes(fallback)[0] == 0 else "F16"


def tensor_nbytes(type_name: str, tensor: Tensor) -> int:
    block, size = type_sizes(type_name)
    raw = tensor.n_elements // block * size
    return -(-raw // ALIGNMENT) * ALIGNMENT


def parse_candidates(spec: str | Sequence[str] | None) -> list[str]:
    names = DEFAULT_CANDIDATES if spec is None else spec
    if isinstance(names, str):
        names = [n for n in names.replace(" ", "").split(",") if n]
    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name not in CANDIDATES:
            hint = did_you_mean(name, CANDIDATES)
            raise ConfigError(
                f'--mix-types: "{raw}" is not a per-tensor type jmed-edge searches{hint}; '
                f"use some of {', '.join(CANDIDATES)}"
            )
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"--mix-types is empty; name some of {', '.join(CANDIDATES)}")
    return out


def _band_edges(n_layers: int, bands: int) -> list[tuple[int, int]]:
    bands = max(1, min(bands, n_layers))
    cuts = [round(i * n_layers / bands) for i in range(bands + 1)]
    return [(cuts[i], cuts[i + 1] - 1) for i in range(bands)]


def tensor_groups(tensors: Sequence[Tensor], bands: int) -> list[Group]:
    """Group the quantizable weights by role and by band of ``bands`` consecutive-layer ranges."""
    roles = [(role, re.compile(pattern)) for role, pattern in ROLES]
    layers = [int(m.group(1)) for t in tensors if (m := _LAYER.match(t.name))]
    n_layers = max(layers) + 1 if layers else 0
    edges = _band_edges(n_layers, bands) if n_layers else []
    groups: dict[str, Group] = {}
    for tensor in tensors:
        role = next((r for r, rx in roles if rx.match(tensor.name)), None)
        if role is None or len(tensor.dims) < 2:
            continue
        m = _LAYER.match(tensor.name)
        if m:
            layer = int(m.group(1))
            lo, hi = next(e for e in edges if e[0] <= layer <= e[1])
            key = f"{role}@{lo}-{hi}"
        else:
            key = role
        groups.setdefault(key, Group(key, role, [])).tensors.append(tensor)
    return list(groups.values())


def group_options(group: Group, candidates: Sequence[str]) -> tuple[list[Option], list[str]]:
    """Distinct options (after fallbacks) of ``group``, smallest first, and the fallbacks as lines."""
    options: dict[tuple, Option] = {}
    replaced: list[str] = []
    for requested in candidates:
        types = {t.name: effective_type(requested, t.dims[0]) for t in group.tensors}
        changed = sorted({ty for ty in types.values() if ty != requested})
        if changed:
            replaced.append(f"{requested} -> {'/'.join(changed)}")
        option = Option(requested, types, sum(tensor_nbytes(types[t.name], t) for t in group.tensors))
        options.setdefault(option.key, option)
    notes = (
        [f"{group.name}: {', '.join(replaced)} (rows of {group.tensors[0].dims[0]}; llama.cpp's fallback)"]
        if replaced
        else []
    )
    return sorted(options.values(), key=lambda o: o.nbytes), notes


def choose(groups: Sequence[Group], options: dict[str, list[Option]], budget: int, grid: int = 20000) -> Plan:
    """Options minimising the summed KL increments with total bytes <= ``budget`` (exact DP on a grid).

    Increments may be negative (a type better than the base); the DP is exact either way, and on
    equal cost it keeps the smaller option (options come smallest first, ``<`` keeps the first).

    Raises ``ConfigError`` naming the smallest reachable size when nothing fits.
    """
    smallest = sum(min(o.nbytes for o in options[g.name]) for g in groups)
    if smallest > budget:
        raise ValueError(smallest)
    unit = max(1, budget // grid)
    cap = budget // unit
    inf = float("inf")
    best = [0.0] + [inf] * cap  # best[c]: least KL using exactly-at-most c units so far
    best_arr = _np().array(best)
    picks = []
    for g in groups:
        opts = options[g.name]
        new = _np().full(cap + 1, inf)
        arg = _np().full(cap + 1, -1, dtype=int)
        for i, opt in enumerate(opts):
            w = -(-opt.nbytes // unit)
            if w > cap:
                continue
            shifted = _np().full(cap + 1, inf)
            shifted[w:] = best_arr[: cap + 1 - w] + opt.kl
            better = shifted < new
            new[better], arg[better] = shifted[better], i
        picks.append(arg)
        best_arr = new
    c = int(_np().argmin(best_arr))
    total = float(best_arr[c])
    choice: dict[str, Option] = {}
    for g, arg in zip(reversed(groups), reversed(picks), strict=True):
        opt = options[g.name][int(arg[c])]
        choice[g.name] = opt
        c -= -(-opt.nbytes // unit)
    choice = {g.name: choice[g.name] for g in groups}
    return Plan(choice, total, sum(o.nbytes for o in choice.values()))


def _np():
    import numpy

    return numpy


def tensor_type_file(types: dict[str, str]) -> str:
    """llama-quantize ``--tensor-type-file`` text: one anchored ``regex=type`` per tensor.

    llama.cpp matches each pattern with ``std::regex_search`` and takes the first hit, so names
    are anchored and dots escaped (``blk.1.`` would otherwise also match ``blk.11.``)."""
    lines = [f"^{re.escape(name)}$={ty.lower()}" for name, ty in types.items()]
    return "\n".join(lines) + "\n"

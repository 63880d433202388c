"""This machine's CPU, and whether a llama.cpp build can run on it.

llama.cpp is compiled with ``-march=native``: a build from an AVX-512 machine dies with SIGILL
(or, worse, only in the first AVX-512 kernel it reaches) on an AVX2-only one. The jmed-edge cache
and pip's wheel cache are sometimes copied between machines, so the instruction sets a build
uses are compared with the ones this CPU reports before the build is trusted.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# llama.cpp's system-info feature names (ggml-cpu.cpp, ggml_backend_cpu_get_features: each is
# a compile-time #if on the instruction set) -> the Linux /proc/cpuinfo flag of that instruction set.
LLAMA_FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
# The flags -march=native turns into instructions ggml uses: what a build records of its CPU.
ISA_FLAGS = frozenset(LLAMA_FEATURE_FLAGS.values()) | {"avx512bw", "avx512vl", "avx512dq"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def isa(self) -> list[str]:
        """The instruction sets llama.cpp cares about, in a stable order."""
        return sorted(self.flags & ISA_FLAGS)

    def describe(self) -> str:
        shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in self.flags]
        return f"{self.model} ({', '.join(shown) or 'no AVX2'})"


@cache
def this_cpu() -> CpuInfo:
    """Model name and feature flags from /proc/cpuinfo; empty flags where it does not exist."""
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo(model, flags)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model, flags)


def llama_features(system_info: str) -> list[str]:
    """Feature names set to 1 in ``llama_print_system_info()``'s CPU line."""
    names = []
    for item in system_info.split("|"):
        name, _, value = item.rpartition("=")
        name = name.split(":")[-1].strip()
        if value.strip() == "1" and name:
            names.append(name)
    return names


def missing_instructions(features: list[str], cpu: CpuInfo | None = None) -> list[str]:
    """Instruction sets a llama.cpp build was compiled for that this CPU does not have."""
    cpu = cpu or this_cpu()
    if not cpu.flags:  # not Linux: nothing to compare with, trust the build
        return []
    return [f for f in features if f in LLAMA_FEATURE_FLAGS and LLAMA_FEATURE_FLAGS[f] not in cpu.flags]


def unused_instructions(features: list[str], cpu: CpuInfo | None = None) -> list[str]:
    """Instruction sets this CPU has that a llama.cpp build was not compiled for (it runs, slower).

    Typical cause: a wheel built on an older machine, or with GGML_NATIVE=OFF.
    """
    cpu = cpu or this_cpu()
    have = set(features)
    return [name for name, flag in LLAMA_FEATURE_FLAGS.items() if flag in cpu.flags and name not in have]


_SYSTEM_INFO = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode(errors='replace'))"


@dataclass(frozen=True)
class BindingsCheck:
    ok: bool  # loads and uses no instruction this CPU lacks
    system_info: str
    detail: str
    unused: tuple[str, ...] = ()  # instruction sets this CPU has and the build does not use


def check_bindings(timeout: float = 60) -> BindingsCheck:
    """Load llama-cpp-python's library in a subprocess (a SIGILL kills that, not us) and compare."""
    try:
        result = subprocess.run([sys.executable, "-c", _SYSTEM_INFO], capture_output=True, text=True,
                                timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return BindingsCheck(False, "", f"loading llama.cpp took over {timeout:.0f} s")
    if result.returncode == -4:  # SIGILL
        return BindingsCheck(False, "", "llama.cpp's library crashes on this CPU (illegal instruction)")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return BindingsCheck(False, "", f"llama.cpp's library does not load: {last}")
    info = result.stdout.strip()
    missing = missing_instructions(llama_features(info))
    if missing:
        return BindingsCheck(
            False, info, f"built for a CPU with {', '.join(missing)}, which {this_cpu().model} lacks"
        )
    unused = tuple(unused_instructions(llama_features(info)))
    detail = f"built without {', '.join(unused)}, which this CPU has (slower)" if unused else ""
    return BindingsCheck(True, info, detail, unused)

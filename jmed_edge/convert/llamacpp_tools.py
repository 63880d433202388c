"""llama.cpp's own conversion code and tools, at the exact version the bindings run.

llama-cpp-python 0.3.36 vendors llama.cpp, but its wheel carries only the shared libraries.
Its source distribution also carries ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``
(with the ``conversion/`` package they wrap), the matching ``gguf-py`` (PyPI's gguf is a
different version and breaks the converter), and the C++ source of ``llama-imatrix``.
``jmed-edge setup`` fetches that sdist once through pip, keeps the converter files, and builds
``llama-imatrix`` and ``llama-quantize`` from the same source; afterwards everything works offline.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from jmed_edge.cpu import ISA_FLAGS, CpuInfo, this_cpu
from jmed_edge.errors import ArtifactError, DependencyError
from jmed_edge.fsutil import staging_dir
from jmed_edge.resources import cache_home

log = logging.getLogger(__name__)

LLAMA_CPP_PYTHON = "0.3.36"
# Files taken from the sdist's vendor/llama.cpp: the converters and what they import.
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", "LICENSE")
IMATRIX_TOOL = "llama-imatrix"
# Quantization itself goes through the bindings (``llama_model_quantize``, imatrix included); the
# quantize tool built from the same source is the reference its output is checked against.
QUANTIZE_TOOL = "llama-quantize"
TOOLS = (IMATRIX_TOOL, QUANTIZE_TOOL)
BUILD_INFO = "build-info.json"  # the CPU the tools were compiled on (-march=native)
BUILD_LOG = "build.log"
# (message, fraction done or None) while setup works; fraction from cmake's "[ 45%]" lines.
SetupProgress = Callable[[str, float | None], None]
_PERCENT = re.compile(r"^\s*\[\s*(\d+)%\]")


def tools_dir() -> Path:
    """``$JMED_EDGE_LLAMA_CPP_DIR`` or the cache folder for this llama-cpp-python version."""
    if env := os.environ.get("JMED_EDGE_LLAMA_CPP_DIR"):
        return Path(env).expanduser()
    return cache_home() / "llama.cpp" / LLAMA_CPP_PYTHON


def converter_dir() -> Path:
    return tools_dir() / "converter"


def imatrix_binary() -> Path:
    return tools_dir() / "bin" / IMATRIX_TOOL


def quantize_binary() -> Path:
    return tools_dir() / "bin" / QUANTIZE_TOOL


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return None


def tools_status() -> tuple[bool, str]:
    """Whether converter and imatrix tool are ready, and a line saying what was found."""
    installed = _installed_version()
    if installed != LLAMA_CPP_PYTHON:
        return False, f"llama-cpp-python {installed or 'missing'}, need {LLAMA_CPP_PYTHON}"
    missing = [p for p in CONVERTER_PARTS if not (converter_dir() / p).exists()]
    if missing:
        return False, f"converter files missing in {converter_dir()}: {', '.join(missing)}"
    missing_tools = [t for t in TOOLS if not (tools_dir() / "bin" / t).is_file()]
    if missing_tools:
        return False, f"{', '.join(missing_tools)} not built in {tools_dir() / 'bin'}"
    if (foreign := built_for_another_cpu()) and "lacks" in foreign:  # would die of SIGILL here
        return False, foreign
    ready = f"llama.cpp {LLAMA_CPP_PYTHON} converter, {' and '.join(TOOLS)} in {tools_dir()}"
    return True, f"{ready}; {foreign} (slower; jmed-edge setup rebuilds them)" if foreign else ready


def built_for_another_cpu(cpu: CpuInfo | None = None) -> str | None:
    """Why the built tools do not fit this CPU: they use instructions it lacks (they crash), or
    lack instructions it has (they run slower). None when they fit or nothing can be compared."""
    cpu = cpu or this_cpu()
    try:
        info = json.loads((tools_dir() / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a build from before build-info.json existed: nothing to compare
    if not info.get("native", True) or not cpu.flags:
        return None  # a portable build (GGML_NATIVE=OFF), or no flags to compare on this OS
    built_for = set(info.get("isa", []))
    if missing := sorted(built_for - cpu.flags):
        return (
            f"llama.cpp tools in {tools_dir()} were built on another CPU ({info.get('cpu', '?')}) and use "
            f"{', '.join(missing)}, which this {cpu.model} lacks"
        )
    if unused := sorted((cpu.flags & ISA_FLAGS) - built_for):
        return (
            f"llama.cpp tools in {tools_dir()} were built on another CPU ({info.get('cpu', '?')}) without "
            f"{', '.join(unused)}, which this {cpu.model} has"
        )
    return None


def require_converter() -> Path:
    """The converter folder, or a one-line error saying to run setup."""
    missing = [p for p in CONVERTER_PARTS if not (converter_dir() / p).exists()]
    if missing:
        raise DependencyError(
            f"llama.cpp's converter is not set up ({converter_dir()} lacks {', '.join(missing)}); "
            "run: jmed-edge setup"
        )
    return converter_dir()


def require_imatrix() -> Path:
    if not imatrix_binary().is_file():
        raise DependencyError(f"{IMATRIX_TOOL} is not built ({imatrix_binary()}); run: jmed-edge setup")
    return imatrix_binary()


def require_quantize_tool() -> Path:
    if not quantize_binary().is_file():
        raise DependencyError(f"{QUANTIZE_TOOL} is not built ({quantize_binary()}); run: jmed-edge setup")
    return quantize_binary()


def _fetch_sdist(into: Path) -> Path:
    """Download the llama-cpp-python sdist with pip (the only step that needs the network)."""
    cached = sorted(tools_dir().glob("llama_cpp_python-*.tar.gz"))
    if cached:
        return cached[0]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(into)]  # fmt: skip
    log.info("fetching the llama-cpp-python %s source: %s", LLAMA_CPP_PYTHON, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not found:
        raise DependencyError(
            f"could not fetch the llama-cpp-python {LLAMA_CPP_PYTHON} source with pip "
            f"({result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no file'}); "
            "run jmed-edge setup once with access to the package index"
        )
    return found[0]


def _extract(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    roots = list(into.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not roots:
        raise DependencyError(f"{sdist} has no vendor/llama.cpp; is it the llama-cpp-python sdist?")
    return roots[0]


def _run_logged(cmd: list[str], log_path: Path, progress: SetupProgress | None, what: str) -> None:
    """Run one build command, its output appended to ``log_path``; cmake's step percent reported."""
    log.info("%s", " ".join(cmd))
    started, fraction = time.monotonic(), None
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            out.write(line)
            tail = [*tail[-2:], line.strip()]
            if match := _PERCENT.match(line):
                fraction = int(match.group(1)) / 100
            if progress:
                progress(f"{what} ({time.monotonic() - started:.0f} s)", fraction)
        if proc.wait() != 0:
            raise DependencyError(
                f"building llama.cpp tools failed: {' | '.join(tail)}; full log: {log_path}; is cmake/g++ installed?"
            )


def _build_tools(source: Path, out_dir: Path, jobs: int, progress: SetupProgress | None = None) -> None:
    build = source / "build-jmed"
    configure = [
        "cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF",
    ]  # fmt: skip
    extra = os.environ.get(
        "JMED_EDGE_LLAMA_CMAKE_ARGS", ""
    ).split()  # e.g. -DGGML_CUDA=ON on a GPU workstation
    configure += extra
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir.parent / BUILD_LOG
    _run_logged(configure, log_path, progress, "configuring llama.cpp")
    build_cmd = ["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(jobs)]
    _run_logged(build_cmd, log_path, progress, f"compiling {' and '.join(TOOLS)}")
    for tool in TOOLS:
        built = next((p for p in build.rglob(tool) if p.is_file()), None)
        if built is None:
            raise DependencyError(f"the build produced no {tool} under {build}")
        shutil.copy2(built, out_dir / tool)
    cpu = this_cpu()
    native = not any(a.upper() in ("-DGGML_NATIVE=OFF", "-DGGML_NATIVE=0") for a in extra)
    info = {"cpu": cpu.describe(), "isa": cpu.isa, "native": native, "cmake_args": extra,
            "llama_cpp_python": LLAMA_CPP_PYTHON}  # fmt: skip
    (out_dir.parent / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def setup_tools(
    *, force: bool = False, jobs: int | None = None, progress: SetupProgress | None = None
) -> Path:
    """Fetch the converter files and build ``llama-imatrix``/``llama-quantize`` into :func:`tools_dir` once."""
    installed = _installed_version()
    if installed != LLAMA_CPP_PYTHON:
        raise DependencyError(
            f"llama-cpp-python {installed or 'is not installed'}; jmed-edge needs {LLAMA_CPP_PYTHON}: "
            f"pip install llama-cpp-python=={LLAMA_CPP_PYTHON}"
        )
    ready, _ = tools_status()
    if ready and not force:
        return tools_dir()
    if shutil.which("cmake") is None:
        raise DependencyError(
            "cmake is not installed; it is needed once to build llama-imatrix (apt install cmake)"
        )
    dest = tools_dir()
    # Replace an earlier build (converter/, bin/, the cached sdist), never a folder of the user's.
    ours = ("converter", "bin", BUILD_INFO, BUILD_LOG)
    if dest.is_dir() and not all(
        p.name in ours or p.name.startswith("llama_cpp_python-") for p in dest.iterdir()
    ):
        raise ArtifactError(
            f"{dest} holds files jmed-edge did not put there; point JMED_EDGE_LLAMA_CPP_DIR at a new folder"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="jmed-llama-src-") as work,
        staging_dir(dest, force=True, foreign_ok=True) as tmp,
    ):
        if progress:
            progress("fetching the llama-cpp-python source", None)
        sdist = _fetch_sdist(Path(work))
        source = _extract(sdist, Path(work))
        converter = tmp / "converter"
        converter.mkdir()
        for part in CONVERTER_PARTS:
            src = source / part
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, converter / part)
        _build_tools(source, tmp / "bin", jobs or os.cpu_count() or 2, progress)
        shutil.copy2(sdist, tmp / sdist.name)  # keeps a rebuild offline
    return dest


def rebuild_bindings(progress: SetupProgress | None = None) -> None:
    """Recompile llama-cpp-python from source for this CPU (its wheel may come from another machine).

    ``--no-cache-dir`` because pip's wheel cache is exactly where a build from another CPU hides.
    """
    cmd = [sys.executable, "-m", "pip", "install", "-v", "--force-reinstall", "--no-deps", "--no-cache-dir",
           "--no-binary", "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON}"]  # fmt: skip
    tools_dir().mkdir(parents=True, exist_ok=True)
    _run_logged(cmd, tools_dir() / BUILD_LOG, progress, "rebuilding llama-cpp-python for this CPU")

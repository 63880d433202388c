"""llama.cpp builds are tied to the CPU they were compiled on: detected, explained, rebuilt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from jmed_edge.convert import llamacpp_tools
from jmed_edge.cpu import CpuInfo, check_bindings, llama_features, missing_instructions, this_cpu
from jmed_edge.errors import DependencyError

AVX512_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX2_CPU = CpuInfo("AMD Ryzen 7 5800X", frozenset({"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"}))


def test_an_avx512_build_on_an_avx2_cpu_names_what_is_missing() -> None:
    features = llama_features(AVX512_INFO)
    assert features[:3] == ["SSE3", "SSSE3", "AVX"] and "LLAMAFILE" in features
    assert missing_instructions(features, AVX2_CPU) == ["AVX512", "AVX512_VBMI", "AVX512_VNNI"]
    assert missing_instructions(llama_features(AVX512_INFO.split("| AVX512 =")[0]), AVX2_CPU) == []


def test_the_installed_bindings_run_on_this_cpu() -> None:
    check = check_bindings()
    assert check.ok, check.detail
    assert "AVX" in llama_features(check.system_info) or not this_cpu().flags


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tools folder as setup leaves it, its build-info.json recording an AVX-512 build CPU."""
    monkeypatch.setenv("JMED_EDGE_LLAMA_CPP_DIR", str(tmp_path / "tools"))
    root = tmp_path / "tools"
    for part in llamacpp_tools.CONVERTER_PARTS:
        (root / "converter" / part).parent.mkdir(parents=True, exist_ok=True)
        (root / "converter" / part).write_text("")
    (root / "bin").mkdir()
    for tool in llamacpp_tools.TOOLS:
        (root / "bin" / tool).write_text("")
    info = {
        "cpu": "Intel Xeon (avx2, avx512f)",
        "isa": ["avx", "avx2", "avx512f", "avx512bw"],
        "native": True,
    }
    (root / llamacpp_tools.BUILD_INFO).write_text(json.dumps(info))
    return root


def test_tools_from_another_cpu_are_not_ready(tools: Path) -> None:
    why = llamacpp_tools.built_for_another_cpu(AVX2_CPU)
    assert why is not None and "another CPU (Intel Xeon" in why and "avx512bw, avx512f" in why
    assert "AMD Ryzen 7 5800X lacks" in why
    info = json.loads((tools / llamacpp_tools.BUILD_INFO).read_text())
    assert llamacpp_tools.built_for_another_cpu(CpuInfo("same", frozenset(info["isa"]))) is None
    (tools / llamacpp_tools.BUILD_INFO).write_text(json.dumps({**info, "native": False}))
    assert llamacpp_tools.built_for_another_cpu(AVX2_CPU) is None  # a portable build runs anywhere


def test_tools_built_without_this_cpus_instructions_run_but_are_rebuilt(tools: Path) -> None:
    info = {"cpu": "AMD Ryzen 7 5800X (avx2)", "isa": sorted(AVX2_CPU.flags), "native": True}
    (tools / llamacpp_tools.BUILD_INFO).write_text(json.dumps(info))
    avx512 = CpuInfo("Intel Xeon", AVX2_CPU.flags | {"avx512f", "avx512bw", "avx512vl"})
    why = llamacpp_tools.built_for_another_cpu(avx512)
    assert why is not None and "without avx512bw, avx512f, avx512vl, which this Intel Xeon has" in why


def test_bindings_built_without_avx512_are_named_slower() -> None:
    from jmed_edge.cpu import unused_instructions

    avx2_build = llama_features(AVX512_INFO.split("| AVX512 =")[0])
    avx512 = CpuInfo("Intel Xeon", AVX2_CPU.flags | {"avx512f", "avx512_vnni"})
    assert unused_instructions(avx2_build, avx512) == ["AVX512", "AVX512_VNNI"]
    assert unused_instructions(llama_features(AVX512_INFO), avx512) == []


def test_setup_rebuilds_tools_from_another_cpu_with_one_line(tools, monkeypatch, run_cli) -> None:
    calls, foreign = [], ["built on another CPU (X)"]  # until the rebuild
    monkeypatch.setattr(
        llamacpp_tools, "built_for_another_cpu", lambda cpu=None: foreign[0] if foreign else None
    )
    monkeypatch.setattr(
        llamacpp_tools, "setup_tools", lambda **kw: calls.append(kw) or foreign.clear() or tools
    )
    code, _, err = run_cli("setup")
    assert code == 0 and calls and calls[0]["force"] is True
    assert [line for line in err.splitlines() if "another CPU" in line] == [
        "! built on another CPU (X); rebuilding them for this CPU"
    ]
    assert "✓ llama.cpp 0.3.36 converter, llama-imatrix and llama-quantize" in " ".join(err.split())


def test_build_steps_report_percent_and_keep_a_log(tmp_path: Path) -> None:
    script = "import sys\nfor p in (5, 50, 100): print(f'[{p:3d}%] Building CXX object ggml.o')\n"
    seen: list[tuple[str, float | None]] = []
    log = tmp_path / "build.log"
    llamacpp_tools._run_logged(
        [sys.executable, "-c", script], log, lambda m, f: seen.append((m, f)), "compiling"
    )
    assert [f for _, f in seen] == [0.05, 0.5, 1.0] and seen[0][0].startswith("compiling (")
    assert "[ 50%] Building CXX object" in log.read_text()
    failing = [sys.executable, "-c", "print('ggml.c:1: error: unknown type'); raise SystemExit(2)"]
    with pytest.raises(DependencyError, match=r"error: unknown type.*full log: .*build.log"):
        llamacpp_tools._run_logged(failing, log, None, "compiling")


def test_setup_progress_off_a_terminal_prints_tenths(capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from jmed_edge.setup_cli import _build_progress

    console = Console(file=sys.stderr, force_terminal=False)
    with _build_progress(console) as report:
        for percent in range(0, 101, 5):
            report(f"compiling llama-imatrix ({percent} s)", percent / 100)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11 and lines[0].startswith("  compiling llama-imatrix 0%, ")
    assert lines[-1].startswith("  compiling llama-imatrix 100%, ") and "s elapsed" in lines[-1]


def test_setup_rebuilds_bindings_that_would_crash_here(tools, monkeypatch, run_cli) -> None:
    import jmed_edge.cpu as cpu
    from jmed_edge.cpu import BindingsCheck

    checks = [BindingsCheck(False, "", "built for a CPU with AVX512, which this CPU lacks"), check_bindings()]
    rebuilt = []
    monkeypatch.delenv("LLAMA_CPP_LIB_PATH", raising=False)
    monkeypatch.setattr(cpu, "check_bindings", lambda: checks.pop(0))
    monkeypatch.setattr(llamacpp_tools, "rebuild_bindings", lambda progress=None: rebuilt.append(True))
    monkeypatch.setattr(llamacpp_tools, "built_for_another_cpu", lambda cpu=None: None)  # the tools fit
    code, _, err = run_cli("setup")
    assert code == 0 and rebuilt == [True] and not checks
    assert "llama-cpp-python: built for a CPU with AVX512, which this CPU lacks; rebuilding it" in " ".join(
        err.split()
    )

"""Cost of ``jmed-edge convert`` against running llama.cpp's converter and quantizer directly.

    python benchmarks/perf/convert.py                        # embedded default model, Q4_K_M
    python benchmarks/perf/convert.py --model PATH --quant q4_k_m --repeats 2 --json out.json

Both paths do HF -> F16 GGUF -> Q4_K_M on the same model, in one run, taking turns:
  * direct:    ``python convert_hf_to_gguf.py MODEL --outtype f16`` (with its own gguf-py on the
               path) then ``llama-quantize F16 OUT Q4_K_M``: llama.cpp's tools, nothing else;
  * jmed-edge: ``jmed-edge convert MODEL --to gguf --quant q4_k_m --no-verify`` (the same
               converter in a child process, the quantizer through the bindings, plus input
               checks, a crash-safe load probe, manifests with file hashes, staging folders).
Verification is then timed on its own (``jmed-edge verify`` of both artifacts).

Reported per path: wall time, CPU time (user+sys of the whole process tree: the steadier
number on a shared machine) and peak RSS of the process tree (sampled every 50 ms). Goals:
jmed-edge / direct <= 1.1x in time, and peak RAM <= 1.2x the model's size. The best of
``--repeats`` rounds counts for each path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table


@dataclass
class Run:
    path: str
    wall_s: float
    cpu_s: float
    peak_rss: int


def measure(path: str, commands: list[list[str]], env: dict[str, str] | None = None) -> Run:
    """Run ``commands`` one after another; wall, CPU of all descendants, peak RSS of the tree."""
    peak = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for cmd in commands:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        stop = threading.Event()

        def sample(pid: int = proc.pid, stop: threading.Event = stop) -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                    peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
                except psutil.Error:
                    pass
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{err.decode(errors='replace')[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(path, time.perf_counter() - started, cpu, peak)


def direct_commands(model: Path, work: Path, quant: str) -> tuple[list[list[str]], dict[str, str]]:
    from jmed_edge.convert.llamacpp_tools import quantize_binary, require_converter

    converter = require_converter()
    env = dict(os.environ, PYTHONPATH=str(converter / "gguf-py"))
    f16 = work / "direct-f16.gguf"
    return [
        [
            sys.executable,
            str(converter / "convert_hf_to_gguf.py"),
            str(model),
            "--outtype",
            "f16",
            "--outfile",
            str(f16),
        ],
        [
            str(quantize_binary()),
            str(f16),
            str(work / f"direct-{quant}.gguf"),
            quant.upper(),
            str(os.cpu_count() or 2),
        ],
    ], env


def ours_commands(model: Path, out: Path, quant: str, verify: bool) -> list[list[str]]:
    cmd = [
        sys.executable,
        "-m",
        "jmed_edge",
        "convert",
        str(model),
        "--to",
        "gguf",
        "--quant",
        quant,
        "--imatrix",
        "none",  # the direct run quantizes without one: compare like with like
        "--out",
        str(out),
        "--force",
    ]
    return [cmd if verify else [*cmd, "--no-verify"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="default", help="HF model folder (default: the embedded default model)"
    )
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()

    from jmed_edge.convert.sources import check_hf_source, resolve_source

    source = check_hf_source(resolve_source(args.model))
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="jmed-perf-convert-"))
    work.mkdir(parents=True, exist_ok=True)
    direct_cmds, direct_env = direct_commands(source.path, work, args.quant)
    runs: dict[str, list[Run]] = {"direct": [], "jmed-edge": []}
    try:
        for round_ in range(args.repeats):
            with console.status(f"round {round_ + 1}/{args.repeats}: llama.cpp tools directly"):
                runs["direct"].append(measure("direct", direct_cmds, direct_env))
            with console.status(f"round {round_ + 1}/{args.repeats}: jmed-edge convert --no-verify"):
                runs["jmed-edge"].append(
                    measure("jmed-edge", ours_commands(source.path, work / "ours", args.quant, False))
                )
        out = work / "ours"
        quant_dir = out / args.quant.upper()
        with console.status("jmed-edge verify (F16 and the quantized type)"):
            verify = measure(
                "verify",
                [
                    [sys.executable, "-m", "jmed_edge", "verify", str(out / "F16"), "--no-record"],
                    [sys.executable, "-m", "jmed_edge", "verify", str(quant_dir), "--no-record"],
                ],
            )
        f16_file = next((out / "F16").glob("*.gguf"))  # <model>-F16.gguf
        sizes = {"model": source.weight_bytes, "f16": f16_file.stat().st_size}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    best = {name: min(rs, key=lambda r: r.wall_s) for name, rs in runs.items()}
    best_cpu = {name: min(r.cpu_s for r in rs) for name, rs in runs.items()}
    d, o = best["direct"], best["jmed-edge"]
    table = Table(
        title=f"HF -> F16 -> {args.quant.upper()} GGUF: {source.name} ({source.weight_bytes / 1024**2:,.0f} MB)"
    )
    for column in ("path", "wall s", "CPU s", "peak RSS", "peak / model size"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, run in (
        ("llama.cpp direct", d),
        ("jmed-edge convert", o),
        ("jmed-edge verify (F16 + quant)", verify),
    ):
        cpu = best_cpu.get(run.path, run.cpu_s)
        table.add_row(
            name,
            f"{run.wall_s:.1f}",
            f"{cpu:.1f}",
            f"{run.peak_rss / 1024**2:,.0f} MB",
            f"{run.peak_rss / sizes['model']:.2f}x",
        )
    table.add_row(
        "ratio jmed-edge / direct",
        f"{o.wall_s / d.wall_s:.2f}x",
        f"{best_cpu['jmed-edge'] / best_cpu['direct']:.2f}x",
        f"{o.peak_rss / d.peak_rss:.2f}x",
        "",
        style="bold",
    )
    console.print(table)
    console.print(
        f"goals: time ratio <= 1.1x, peak RAM <= 1.2x the model's size ({sizes['model'] / 1024**2:,.0f} MB "
        f"safetensors; F16 GGUF {sizes['f16'] / 1024**2:,.0f} MB)"
    )
    if args.json:
        result = {
            "model": str(source.path),
            "quant": args.quant,
            "sizes": sizes,
            "verify": asdict(verify),
            "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
            "ratio_wall": o.wall_s / d.wall_s,
            "ratio_cpu": best_cpu["jmed-edge"] / best_cpu["direct"],
            "peak_over_model": o.peak_rss / sizes["model"],
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

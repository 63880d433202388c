"""Speed and memory of one artifact on this machine: load time, prompt and decode tokens/s, peak RAM.

Each artifact is measured in a fresh subprocess so its peak RSS is its own, not the sum of
everything the parent process loaded before. ``python -m jmed_edge.report.probe ARTIFACT`` prints
the measurement as JSON.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from jmed_edge.errors import ModelError

# A bilingual clinical prompt of a few hundred tokens, so prompt speed is measured on real text.
PROMPT_TEXT = (
    "65歳男性。高血圧と2型糖尿病で通院中。3日前からの発熱と咳嗽、呼吸困難を主訴に来院した。"
    "体温38.5℃、血圧142/88 mmHg、脈拍102/分、SpO2 93%(室内気)。胸部X線で右下肺野に浸潤影を認める。"
    "A 65-year-old man with hypertension and type 2 diabetes presents with three days of fever, cough "
    "and shortness of breath. Temperature 38.5 C, blood pressure 142/88 mmHg, pulse 102/min, SpO2 93% "
    "on room air. Chest X-ray shows a right lower lobe infiltrate. 考えられる診断と初期治療を述べよ。"
)
DECODE_TOKENS = 48
# Bumped whenever what a measurement means changes, so older perf.json files are remeasured.
PROBE_VERSION = 2


def measure(artifact: Path, *, options: dict[str, Any] | None = None, repeats: int = 2) -> dict[str, Any]:
    """Run in-process: load the artifact, time a prompt pass and a greedy decode (best of ``repeats``)."""
    from jmed_edge.runtimes import GenerationStats, SamplingParams, open_runtime

    options = dict(options or {})
    start = time.perf_counter()
    runtime = open_runtime(artifact, **options)
    load_seconds = time.perf_counter() - start
    try:
        prompt = runtime.render_chat([{"role": "user", "content": PROMPT_TEXT}])
        best: GenerationStats | None = None
        for _ in range(repeats):
            # Every repeat starts cold: a reused KV prefix would time the prompt at cache speed.
            forget = getattr(runtime, "forget_cache", None)
            if forget is not None:
                forget()
            stats = GenerationStats()
            for _piece in runtime.generate(prompt, SamplingParams(max_tokens=DECODE_TOKENS), stats):
                pass
            if best is None or stats.decode_tokens_per_second > best.decode_tokens_per_second:
                best = stats
    finally:
        runtime.close()
    assert best is not None
    return {
        "load_seconds": round(load_seconds, 3),
        "prompt_tokens": best.prompt_tokens,
        "prompt_tokens_per_second": round(best.prompt_tokens_per_second, 2),
        "decode_tokens": best.completion_tokens,
        "decode_tokens_per_second": round(best.decode_tokens_per_second, 2),
        "peak_rss_bytes": peak_rss_bytes(),
        "n_threads": getattr(runtime, "n_threads", None),
    }


def peak_rss_bytes() -> int:
    """This process's own peak RSS.

    Linux keeps ``ru_maxrss`` across ``fork`` + ``exec``, so a probe started by a process holding
    gigabytes would report the parent's peak; ``VmHWM`` belongs to this process's address space alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kilobytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_in_subprocess(
    artifact: Path, *, options: dict[str, Any] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """``measure`` in a fresh interpreter; ``options`` are the runtime's (n_threads, n_ctx, base, ...)."""
    cmd = [sys.executable, "-m", "jmed_edge.report.probe", str(artifact)]
    if options:
        cmd += ["--options", json.dumps(options, sort_keys=True, default=str)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"speed probe of {artifact} took longer than {timeout:.0f} s; stopped") from exc
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"speed probe of {artifact} failed: {last}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise ModelError(f"speed probe of {artifact} printed no measurement") from exc


def record_perf(
    artifact: Path, folder: Path, sha256: str, *, options: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bool]:
    """``folder/perf.json`` for this version of the artifact: reused while its sha256, the probe
    version and the runtime options match, measured in a subprocess otherwise. Returns the
    measurement and whether it was taken now."""
    from jmed_edge.fsutil import staging_file

    perf_file = folder / "perf.json"
    requested = json.loads(json.dumps(options or {}, sort_keys=True, default=str))  # as it reads back
    if sha256 and perf_file.is_file():
        try:
            cached = json.loads(perf_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = {}
        if (cached.get("sha256"), cached.get("probe_version"), cached.get("options")) == (
            sha256,
            PROBE_VERSION,
            requested,
        ):
            return cached, False
    perf = measure_in_subprocess(artifact, options=options)
    perf.update(sha256=sha256, probe_version=PROBE_VERSION, options=requested)
    folder.mkdir(parents=True, exist_ok=True)
    with staging_file(perf_file) as tmp:
        tmp.write_text(json.dumps(perf, indent=1), encoding="utf-8")
    return perf, True


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jmed_edge.report.probe")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--options", default="", help="runtime options as JSON, e.g. '{\"n_ctx\": 2048}'")
    args = parser.parse_args(argv)
    options = json.loads(args.options) if args.options else {}
    if args.threads:
        options["n_threads"] = args.threads
    print(json.dumps(measure(args.artifact, options=options)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

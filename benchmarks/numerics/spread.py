"""How far the same numbers move when only the arithmetic's order changes: the source of every tolerance.

    python benchmarks/numerics/spread.py --out spread-native.json
    LLAMA_CPP_LIB_PATH=/path/to/avx2-build/bin python benchmarks/numerics/spread.py --out spread-avx2.json
    python benchmarks/numerics/spread.py --compare spread-native.json spread-avx2.json

llama.cpp is compiled with ``-march=native``: an AVX-512 machine and an AVX2-only one take
different kernels, and the batch size and thread count change how each kernel splits its sums.
torch and onnxruntime pick kernels by CPU too. This script measures, on the embedded default
model (SmolLM2-135M-Instruct, F16 GGUF and fp32 Hugging Face folder) and the texts the tests
use, how much log-likelihoods and logits move when only that changes:

* llama.cpp against itself: ``n_batch`` 1, 7 and 512 by ``n_threads`` 1 and 2, and the score
  read from a saved prompt state against the one read off full logits (what the runtime does
  against what a test recomputes);
* llama.cpp (F16) against torch (fp32): logits KL and per-option log-likelihood differences;
* torch against itself: 1 vs 2 threads, a prompt alone vs left-padded in a batch;
* with ``--compare``, two runs of this script on two llama.cpp builds (say the native one and
  one built with ``-DGGML_NATIVE=OFF -DGGML_AVX512=OFF``): the spread across CPU paths.

The bounds in ``jmed_edge/testing/numerics.py`` and the verification tolerances quote these
numbers; rerun this after a llama.cpp, torch or onnxruntime upgrade.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

MCQ = (
    "Question: Which drug is an antiplatelet agent?\nA. aspirin\nB. insulin\nC. metformin\nD. heparin\n"
    "Answer:"
)
CONTINUATION = " aspirin, because it inhibits platelets"
OPTIONS = [" A", " B", " C", " D", " aspirin", " heparin sodium"]
TEXT = "患者は65歳の男性で、高血圧と2型糖尿病の既往がある。Aspirin 100 mg was given; HbA1c 7.8%."
CONFIGS = [(b, t) for b, t in itertools.product((1, 7, 512), (1, 2))]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def kl(a: np.ndarray, b: np.ndarray) -> float:
    la, lb = log_softmax(a), log_softmax(b)
    return float((np.exp(la) * (la - lb)).sum(-1).mean())


def full_logit_sum(runtime, context: str, continuation: str) -> float:
    ctx = runtime.tokenize(context, add_special=True)
    full = runtime.tokenize(context + continuation, add_special=True)
    lp = log_softmax(runtime.logits(full))
    return float(sum(lp[i - 1, full[i]] for i in range(len(ctx), len(full))))


def default_pair() -> tuple[Path, Path]:
    """The default model's HF folder and its F16 GGUF (converted once into the cache)."""
    from jmed_edge.artifacts import describe
    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.models.default import materialise
    from jmed_edge.resources import cache_home

    hf = materialise(progress=False)
    out = cache_home() / "bench" / "default-f16"
    if not (out / "F16").is_dir():
        print(f"converting the default model to F16 in {out} (once) ...", file=sys.stderr)
        convert_to_gguf(hf, out, quants=(), verify=False, force=True)
    return hf, describe(out / "F16").path


def measure_llamacpp(gguf: Path) -> dict:
    from jmed_edge.runtimes import open_runtime

    runs = {}
    for n_batch, n_threads in CONFIGS:
        rt = open_runtime(gguf, n_threads=n_threads, n_batch=n_batch)
        ids = rt.tokenize(TEXT, add_special=True)
        [state] = rt.score_continuations(MCQ, [CONTINUATION])
        runs[f"b{n_batch}-t{n_threads}"] = {
            "logits": rt.logits(ids),
            "score_from_state": state.logprob,
            "score_full_logits": full_logit_sum(rt, MCQ, CONTINUATION),
            "options": [s.logprob for s in rt.score_continuations(MCQ, OPTIONS)],
        }
        system_info = __import__("llama_cpp").llama_print_system_info().decode()
        rt.close()
    names = list(runs)
    logit_spread = max(
        float(np.abs(runs[a]["logits"] - runs[b]["logits"]).max())
        for a, b in itertools.combinations(names, 2)
    )
    scale = float(np.abs(runs[names[0]]["logits"]).max())
    sums = [r["score_full_logits"] for r in runs.values()] + [r["score_from_state"] for r in runs.values()]
    options = np.array([r["options"] for r in runs.values()])
    return {
        "system_info": system_info.strip(),
        "configs": names,
        "logits_max_abs_spread": logit_spread,
        "logits_max_abs": scale,
        "logits_kl_spread": max(kl(runs[a]["logits"], runs[b]["logits"]) for a, b in itertools.combinations(names, 2)),
        "continuation_logprob": sums[0],
        "continuation_tokens": len(runs[names[0]]["options"]),
        "continuation_spread": float(max(sums) - min(sums)),
        "state_vs_full_max": float(max(abs(r["score_from_state"] - r["score_full_logits"]) for r in runs.values())),
        "options_spread": float((options.max(0) - options.min(0)).max()),
        "per_config": {k: {"score_from_state": v["score_from_state"], "score_full_logits": v["score_full_logits"],
                           "options": v["options"], "logits_row0": v["logits"][0, :64].tolist()}
                       for k, v in runs.items()},
    }  # fmt: skip


def measure_torch(hf_dir: Path, gguf: Path) -> dict:
    import torch

    from jmed_edge.runtimes import open_runtime

    hf = open_runtime(hf_dir)
    ids = hf.tokenize(TEXT, add_special=True)
    torch.set_num_threads(1)
    one = hf.logits(ids)
    torch.set_num_threads(2)
    two = hf.logits(ids)
    alone = [s.logprob for s in hf.score_continuations(MCQ, OPTIONS)]
    batched = [
        s.logprob for s in hf.score_batch([(MCQ, OPTIONS), ("Q: 1+1?\nA. 2\nB. 3\nAnswer:", [" A", " B"])])[0]
    ]
    gg = open_runtime(gguf, n_threads=2)
    g_logits = gg.logits(ids)
    g_options = [s.logprob for s in gg.score_continuations(MCQ, OPTIONS)]
    gg.close()
    return {
        "torch_threads_max_abs": float(np.abs(one - two).max()),
        "torch_batched_vs_alone_max": float(np.abs(np.array(batched) - np.array(alone)).max()),
        "f16_vs_fp32_kl": kl(one, g_logits),
        "f16_vs_fp32_top1": float((one.argmax(-1) == g_logits.argmax(-1)).mean()),
        "f16_vs_fp32_max_abs": float(np.abs(one - g_logits).max()),
        "f16_vs_fp32_option_max": float(np.abs(np.array(alone) - np.array(g_options)).max()),
        "torch_options": alone,
    }  # fmt: skip


def measure_onnx(hf_dir: Path) -> dict:
    """fp32 ONNX (onnxruntime-genai's builder) against torch, and against itself at 1 and 2 threads."""
    import torch

    from jmed_edge.convert.onnx.convert import convert_to_onnx
    from jmed_edge.resources import cache_home
    from jmed_edge.runtimes import open_runtime

    out = cache_home() / "bench" / "default-onnx"
    folder = out / "onnx-fp32"
    if not folder.is_dir():
        print(f"exporting the default model to fp32 ONNX in {out} (once) ...", file=sys.stderr)
        folder = convert_to_onnx(hf_dir, out, ("fp32",), verify=False, force=True, progress=False)["fp32"]
    hf = open_runtime(hf_dir)
    torch.set_num_threads(2)
    ids = hf.tokenize(TEXT, add_special=True)
    ref = hf.logits(ids)
    found = {}
    for threads in (1, 2):
        rt = open_runtime(folder, n_threads=threads)
        [state] = rt.score_continuations(MCQ, [CONTINUATION])
        found[threads] = (rt.logits(ids), state.logprob, full_logit_sum(rt, MCQ, CONTINUATION))
        rt.close()
    return {
        "onnx_fp32_vs_torch_max_abs": max(float(np.abs(v[0] - ref).max()) for v in found.values()),
        "onnx_threads_max_abs": float(np.abs(found[1][0] - found[2][0]).max()),
        "onnx_state_vs_full_max": max(abs(v[1] - v[2]) for v in found.values()),
        "onnx_continuation_spread": float(np.ptp([x for v in found.values() for x in v[1:]])),
    }


def compare(paths: list[Path]) -> dict:
    runs = [json.loads(p.read_text()) for p in paths]
    keys = runs[0]["llamacpp"]["per_config"].keys()
    values = {k: [r["llamacpp"]["per_config"][k] for r in runs] for k in keys}
    state = [v["score_from_state"] for vs in values.values() for v in vs]
    full = [v["score_full_logits"] for vs in values.values() for v in vs]
    options = np.array([v["options"] for vs in values.values() for v in vs])
    rows = np.array([v["logits_row0"] for vs in values.values() for v in vs])
    return {
        "builds": [r["llamacpp"]["system_info"] for r in runs],
        "continuation_spread_all": float(max(state + full) - min(state + full)),
        "options_spread_all": float((options.max(0) - options.min(0)).max()),
        "logits_row0_spread_all": float((rows.max(0) - rows.min(0)).max()),
        "state_vs_full_max_all": max(r["llamacpp"]["state_vs_full_max"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the measurements here (JSON)")
    parser.add_argument(
        "--compare", type=Path, nargs="+", help="spread across runs of this script on other builds"
    )
    parser.add_argument(
        "--no-onnx", action="store_true", help="skip the ONNX measurements (an export, ~20 s)"
    )
    args = parser.parse_args()
    if args.compare:
        print(json.dumps(compare(args.compare), indent=2))
        return 0
    hf_dir, gguf = default_pair()
    result = {"llamacpp": measure_llamacpp(gguf), "torch": measure_torch(hf_dir, gguf)}
    if not args.no_onnx:
        result["onnx"] = measure_onnx(hf_dir)
    summary = {k: v for k, v in result["llamacpp"].items() if k != "per_config"}
    print(json.dumps({**result, "llamacpp": summary}, indent=2, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

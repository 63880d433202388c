"""Peak RAM of loading an ONNX folder and generating from it, against the size of its ONNX files.

    python benchmarks/perf/onnx_load.py runs/scale/runs/7b/onnx/onnx-int4 --out runs/onnx_load.json

Two ways in, each in a fresh process measured from outside (``scale.measure``: summed RSS of the
process tree, or the largest process's VmHWM when higher):

  og     onnxruntime-genai directly: ``og.Model`` + ``og.Generator``, a prompt and 16 new tokens
  jmed   jmed-edge's ONNX runtime (``open_runtime``): the same prompt, 16 tokens, greedy

The goal (issue #21) is a peak no more than the ONNX files' size plus 20%.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

GOAL = 1.2  # peak RSS / bytes of model.onnx + its external data
PROMPT = "高血圧の第一選択薬は何ですか? What is the first-line drug for hypertension?"
TOKENS = 16


def _child(via: str, folder: str) -> int:
    started = time.perf_counter()
    if via == "og":
        import numpy as np
        import onnxruntime_genai as og

        model = og.Model(folder)
        tokenizer = og.Tokenizer(model)
        ids = tokenizer.encode(PROMPT)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + TOKENS, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(ids, dtype=np.int32))
        new = 0
        while not generator.is_done():
            generator.generate_next_token()
            new += 1
    else:
        from jmed_edge.runtimes import SamplingParams, open_runtime

        runtime = open_runtime(Path(folder), runtime="onnx")
        text = "".join(runtime.generate(PROMPT, SamplingParams(max_tokens=TOKENS, temperature=0.0)))
        new = len(runtime.tokenize(text))
    print(json.dumps({"new_tokens": new, "seconds": round(time.perf_counter() - started, 1)}))
    return 0


def _scale():
    spec = importlib.util.spec_from_file_location("scale_bench", Path(__file__).with_name("scale.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(argv[1], argv[2])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path, help="onnx-<precision> folders")
    parser.add_argument("--via", default="og,jmed", help="comma-separated: og, jmed")
    parser.add_argument("--out", type=Path, default=None, help="append the rows to this JSON file")
    args = parser.parse_args(argv)
    scale = _scale()
    rows = json.loads(args.out.read_text())["rows"] if args.out and args.out.exists() else []
    for folder in args.folders:
        files = sum(p.stat().st_size for p in folder.glob("model.onnx*"))
        for via in args.via.split(","):
            log = folder.parent / f"load-{folder.name}-{via}.log"
            seconds, tree, hwm = scale.measure([sys.executable, __file__, "--child", via, str(folder)], log)
            peak = max(tree, hwm)
            child = json.loads(log.read_text().strip().splitlines()[-1])
            row = {"folder": str(folder), "via": via, "seconds": round(seconds, 1), "peak_rss_bytes": peak,
                   "onnx_bytes": files, "ratio": round(peak / files, 3), "goal": GOAL,
                   "met": peak / files <= GOAL, **child}  # fmt: skip
            rows.append(row)
            print(f"{folder.name} via {via}: {seconds:.0f} s, peak {peak / 1e9:.2f} GB = {peak / files:.2f}x "
                  f"the {files / 1e9:.2f} GB of ONNX files (goal {GOAL}x), {child['new_tokens']} tokens", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["met"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

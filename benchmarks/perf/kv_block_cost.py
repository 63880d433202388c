"""What deterministic prompt evaluation costs: fixed 64-token blocks against one call per prompt.

    python benchmarks/perf/kv_block_cost.py                      # the embedded default GGUF
    python benchmarks/perf/kv_block_cost.py --gguf MODEL.gguf --threads 4 --repeats 5

The llama.cpp runtime decodes every prompt in blocks of ``kv_block`` tokens at fixed
positions (``jmed_edge.runtimes.kvplan``), so that a prefix reused from the KV cache holds
exactly the numbers a fresh evaluation would write. Smaller decode calls use the CPU's matrix
kernels less well. This measures a cold prompt evaluation (empty cache) of prompts of several
lengths with ``kv_block`` 64 and with one call per prompt (``kv_block`` = ``n_batch``), in
alternation in one process, as CPU seconds (less sensitive to other load than wall time), and
the saving the blocks buy when the choices of one question share their context.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

TEXT = (
    "患者は65歳の男性。高血圧と2型糖尿病の既往がある。Aspirin 100 mg was given; HbA1c 7.8%. "
    "Question: Which drug is an antiplatelet agent? A. aspirin B. insulin C. metformin D. heparin. "
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gguf", type=Path, help="GGUF file or artifact folder (default: the embedded default)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", default="64,190,500")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from jmed_edge.models.default import default_gguf
    from jmed_edge.runtimes import open_runtime

    runtime = open_runtime(args.gguf or default_gguf(), n_threads=args.threads, n_ctx=1024)
    words = runtime.tokenize(TEXT * 40, add_special=True)
    table = Table(title=f"cold prompt evaluation, CPU s (best of {args.repeats}), {args.threads} thread(s)")
    for col in ("prompt tokens", "one call", "64-token blocks", "cost", "4 choices, shared context"):
        table.add_column(col)
    for n in (int(x) for x in args.lengths.split(",")):
        ids = words[:n]
        best = {}
        for block in (runtime.llm.n_batch, 64):
            runtime.kv_block = block
            times = []
            for _ in range(args.repeats):
                runtime.forget_cache()
                started = time.process_time()
                runtime.logits(ids)
                times.append(time.process_time() - started)
            best[block] = min(times)
        # Four choices after one context: the first is scored cold, the others reuse whole blocks.
        runtime.kv_block = 64
        runtime.forget_cache()
        started = time.process_time()
        for choice in (" A", " B", " C", " D"):
            runtime.prompt_logprobs(ids + runtime.tokenize(choice, add_special=False), 1)
        shared = time.process_time() - started
        one, blocks = best[runtime.llm.n_batch], best[64]
        table.add_row(str(n), f"{one:.3f}", f"{blocks:.3f}", f"{blocks / one - 1:+.0%}",
                      f"{shared:.3f} ({shared / (4 * one):.0%} of 4 cold)")  # fmt: skip
    runtime.close()
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

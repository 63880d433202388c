"""Subprocess entry: run onnxruntime-genai's model builder for several precisions in one process.

Run as ``python -m jmed_edge.convert.onnx._builder_worker JOB.json``. The builder's imports
(torch, transformers, onnx_ir) take most of a small export's time, so one process builds every
precision of a request. It runs in its own process because it is memory-hungry and can abort
the interpreter; the parent reads the ``@@jmed`` marker lines to know which precision finished.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import traceback


def main(job_file: str) -> int:
    with open(job_file, encoding="utf-8") as fh:
        job = json.load(fh)
    import onnxruntime_genai.models.builder as builder  # the package puts builder's folder on sys.path

    if job.get("streaming", True):
        from jmed_edge.convert.onnx import streaming

        streaming.install(builder.Model)

    failed = 0
    for item in job["jobs"]:
        precision = item["precision"]
        print(f"@@jmed start {precision}", flush=True)
        started = time.perf_counter()
        try:
            extra = builder.parse_extra_options(
                None,
                job["source"],
                item["out"],
                precision,
                job["target"],
                job["cache_dir"],
                item["extra_options"],
            )
            builder.create_model(
                None, job["source"], item["out"], precision, job["target"], job["cache_dir"], **extra
            )
        except Exception as exc:  # reported to the parent as one line; the next precision still runs
            traceback.print_exc()
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            print(f"@@jmed fail {precision} {message}", flush=True)
            failed += 1
        else:
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # so far, this process
            print(f"@@jmed done {precision} {time.perf_counter() - started:.1f} {peak_kb}", flush=True)
        gc.collect()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

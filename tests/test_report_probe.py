"""The per-artifact speed and memory probe reports the artifact's own cost, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_probe_from_a_large_parent_reports_its_own_peak_and_a_cold_prompt(default_gguf):
    # The parent holds 1.5 GB when it starts the probe, as `jmed-edge run` does after training.
    script = (
        "import json, sys, numpy as np\n"
        "from pathlib import Path\n"
        "held = np.ones(1_500_000_000 // 8)\n"
        "from jmed_edge.report.probe import measure_in_subprocess\n"
        'print(json.dumps(measure_in_subprocess(Path(sys.argv[1]), options={"n_threads": 1})))\n'
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(default_gguf)], capture_output=True, text=True, check=True
    )
    import json

    perf = json.loads(out.stdout.strip().splitlines()[-1])
    # A 100 MB GGUF with a 4096-token context needs a few hundred MB, never the parent's 1.5 GB.
    assert 50 * 1024**2 < perf["peak_rss_bytes"] < 1024**3
    assert perf["prompt_tokens"] > 100 and perf["decode_tokens"] > 0
    # Prompt processing is a real pass over ~300 tokens: on a CPU far below a cached prefix's
    # thousands of tokens per second, and well above one token at a time.
    assert perf["prompt_tokens_per_second"] < 3000
    assert perf["prompt_tokens_per_second"] > perf["decode_tokens_per_second"] / 2


def test_peak_rss_reads_this_process():
    # In a fresh interpreter: the test process's own high-water mark is already far above 200 MB.
    script = (
        "import numpy as np\n"
        "from jmed_edge.report.probe import peak_rss_bytes\n"
        "before = peak_rss_bytes()\n"
        "block = np.ones(200_000_000 // 8)  # 200 MB, touched\n"
        "print(before, peak_rss_bytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before < 500 * 1024**2
    assert after >= before + 150 * 1024**2

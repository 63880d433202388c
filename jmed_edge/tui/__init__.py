"""``jmed-edge tui``: a Textual interface over the same library functions the CLI calls.

Screens: Artifacts (what is under the root, verify / convert), Chat (stream answers, compare
two artifacts side by side), Bench (run benchmarks with live progress, cancel and resume) and
Report (accuracy loss, KL divergence, a RAM-budget recommendation and a chart in the terminal).
Every model call runs in a worker thread, so the interface answers keys while a model works.
"""

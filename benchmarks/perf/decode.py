"""Decode speed of ``jmed-edge chat --prompt`` and ``jmed-edge serve`` against raw llama-cpp-python.

    python benchmarks/perf/decode.py [--gguf PATH] [--tokens 128] [--repeats 5]

One run, one GGUF (default: the embedded default model as Q4_K_M), one prompt (rendered by the
GGUF's own chat template), greedy decoding, ``n_threads=1`` everywhere, and the same clock for
every path: tokens/s = (completion tokens - 1) / (time of the last piece - time of the first),
measured where the text arrives (the terminal writer, the HTTP client, the raw iterator).
The three paths take turns for ``--repeats`` rounds and the best round of each counts, which
is what survives a shared, noisy CPU. Tokens per CPU-second of the whole process are shown
beside wall-clock tokens/s: on a loaded machine they are the steadier of the two. The ratios
chat/raw and serve/raw are the result (goal: at least 0.95); the first answers of the three
paths must be identical and every run as long as the others, or the comparison is void.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import default_q4_k_m

QUESTION = "Explain hypertension in detail: its causes, symptoms, complications and treatments."


@dataclass
class Run:
    path: str
    tokens: int
    seconds: float  # wall time from the first piece to the last
    text: str
    cpu_seconds: float = 0.0  # CPU time of this whole process (every thread) over the same span

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens - 1) / self.seconds if self.seconds > 0 and self.tokens > 1 else 0.0

    @property
    def tokens_per_cpu_second(self) -> float:
        return (self.tokens - 1) / self.cpu_seconds if self.cpu_seconds > 0 and self.tokens > 1 else 0.0


class Clock:
    """Wall and process CPU time of the first and the last piece of an answer."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.last = (0.0, 0.0)

    def tick(self) -> None:
        now = (time.perf_counter(), time.process_time())
        self.first = self.first or now
        self.last = now

    def spans(self) -> tuple[float, float]:
        first = self.first or self.last
        return self.last[0] - first[0], self.last[1] - first[1]


class TimedWriter:
    """Stands in for the terminal: records each write and when it happened."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.perf_counter(), time.process_time(), text))
        return len(text)

    def flush(self) -> None:
        pass

    def answer(self) -> tuple[str, float, float]:
        """The answer (without the closing newline), wall and CPU seconds from its first to last piece."""
        pieces = self.writes[:-1] if self.writes and self.writes[-1][2] == "\n" else self.writes
        if not pieces:
            return "", 0.0, 0.0
        first, last = pieces[0], pieces[-1]
        return "".join(p[2] for p in pieces), last[0] - first[0], last[1] - first[1]


RAW = "raw llama-cpp-python"  # labels as they appear in the table


def raw_llama(llm, prompt: str, max_tokens: int) -> Run:
    clock, parts, n = Clock(), [], 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
        if chunk["choices"][0]["finish_reason"] is None:
            clock.tick()
            parts.append(chunk["choices"][0]["text"])
            n += 1  # one chunk per token; the closing chunk carries only the finish reason
    wall, cpu = clock.spans()
    return Run(RAW, n, wall, "".join(parts), cpu)


def chat_path(runtime, question: str, max_tokens: int) -> Run:
    from jmed_edge.chat.cli import answer_once
    from jmed_edge.chat.session import ChatSession
    from jmed_edge.runtimes.base import SamplingParams

    session = ChatSession(runtime, params=SamplingParams(max_tokens=max_tokens, temperature=0.0))
    writer = TimedWriter()
    answer_once(session, question, out=writer)  # what `jmed-edge chat --prompt` runs once loaded
    text, seconds, cpu = writer.answer()
    return Run("chat --prompt", session.last.stats.completion_tokens, seconds, text, cpu)


def serve_path(http: httpx.Client, url: str, question: str, max_tokens: int) -> Run:
    body = {"model": "bench", "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    clock, parts, tokens = Clock(), [], 0
    with http.stream("POST", url, json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if piece := choice["delta"].get("content"):
                    clock.tick()
                    parts.append(piece)
    wall, cpu = clock.spans()
    return Run("serve (SSE stream)", tokens, wall, "".join(parts), cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", help="GGUF to measure (default: the embedded default model as Q4_K_M)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens to generate (128)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the best of each path counts (5)")
    parser.add_argument("--ctx", type=int, default=2048, help="context length for every path (2048)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    import llama_cpp

    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import force_offline, open_model
    from jmed_edge.serve import ServeSettings, create_app
    from jmed_edge.serve.server import BackgroundServer

    force_offline()
    gguf = describe(Path(args.gguf) if args.gguf else default_q4_k_m())
    chat_runtime = open_model(gguf, n_threads=1, n_ctx=args.ctx)
    serve_runtime = open_model(gguf, n_threads=1, n_ctx=args.ctx)
    prompt = chat_runtime.render_chat([{"role": "user", "content": QUESTION}])
    llm = llama_cpp.Llama(str(gguf.model_file), n_ctx=args.ctx, n_threads=1, n_threads_batch=1, verbose=False)
    settings = ServeSettings(model_name="bench", max_tokens_limit=args.tokens)
    best: dict[str, Run] = {}
    best_cpu: dict[str, Run] = {}
    first_texts: dict[str, str] = {}
    counts: set[int] = set()
    try:
        with (
            BackgroundServer(create_app([serve_runtime], settings)) as server,
            httpx.Client(timeout=600) as http,
        ):
            url = server.base_url + "/v1/chat/completions"
            for round_ in range(args.repeats):
                for run in (raw_llama(llm, prompt, args.tokens), chat_path(chat_runtime, QUESTION, args.tokens),
                            serve_path(http, url, QUESTION, args.tokens)):  # fmt: skip
                    if round_ == 0:  # every path starts from an empty KV cache: answers must agree
                        first_texts[run.path] = run.text
                    counts.add(run.tokens)
                    if run.path not in best or run.tokens_per_second > best[run.path].tokens_per_second:
                        best[run.path] = run
                    if (
                        run.path not in best_cpu
                        or run.tokens_per_cpu_second > best_cpu[run.path].tokens_per_cpu_second
                    ):
                        best_cpu[run.path] = run
    finally:
        llm.close()
        chat_runtime.close()
        serve_runtime.close()
    return show(best, best_cpu, first_texts, counts, gguf.name, args)


def show(best: dict[str, Run], best_cpu: dict[str, Run], first_texts: dict[str, str], counts: set[int],
         model: str, args: argparse.Namespace) -> int:  # fmt: skip
    from rich.console import Console
    from rich.table import Table

    raw, raw_cpu = best[RAW], best_cpu[RAW]
    table = Table(title=f"decode speed, {model}, n_threads=1, best of {args.repeats}")
    for column in ("path", "tokens", "tok/s wall", "x raw", "tok/CPU-s", "x raw "):
        table.add_column(column, justify="left" if column == "path" else "right")
    ratios = {}
    for path, run in best.items():
        cpu = best_cpu[path]
        ratios[path] = (run.tokens_per_second / raw.tokens_per_second,
                        cpu.tokens_per_cpu_second / raw_cpu.tokens_per_cpu_second)  # fmt: skip
        table.add_row(path, str(run.tokens), f"{run.tokens_per_second:.1f}", f"{ratios[path][0]:.3f}",
                      f"{cpu.tokens_per_cpu_second:.1f}", f"{ratios[path][1]:.3f}")  # fmt: skip
    console = Console()
    console.print(table)
    console.print("CPU time is the whole process's (every thread) between the first and the last piece; "
                  "for serve it includes the HTTP client reading the stream.")  # fmt: skip
    # Later rounds reuse each path's KV cache, which can flip a nearly tied greedy choice, so
    # only the first (cold) answers must be identical; the token counts must always match.
    same = len(set(first_texts.values())) == 1 and len(counts) == 1
    console.print("[green]✓[/] same first answer and the same number of tokens on every path" if same else
                  "[red]✗[/] the paths did not produce the same answer or length: the comparison is void")  # fmt: skip
    if args.json:
        record = {"model": model, "repeats": args.repeats, "tokens": args.tokens, "same_answer": same,
                  "runs": {path: {"tokens_per_second": best[path].tokens_per_second,
                                  "tokens_per_cpu_second": best_cpu[path].tokens_per_cpu_second,
                                  "ratio_to_raw_wall": wall, "ratio_to_raw_cpu": cpu}
                           for path, (wall, cpu) in ratios.items()}}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

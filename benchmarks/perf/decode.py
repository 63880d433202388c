"""Decode speed of ``jmed-edge chat --prompt`` and ``jmed-edge serve`` against raw llama-cpp-python.

    python benchmarks/perf/decode.py [--gguf PATH] [--tokens 128] [--repeats 5]

One run, one GGUF (default: the embedded default model as Q4_K_M), one prompt (rendered by the
GGUF's own chat template), greedy decoding, ``n_threads=1`` everywhere, and the same clock for
every path: tokens/s = (completion tokens - 1) / (time of the last piece - time of the first),
measured where the text arrives (the terminal writer, the HTTP client, the raw iterator).
The three paths take turns for ``--repeats`` rounds and the best round of each counts, which
is what survives a shared, noisy CPU. The ratios chat/raw and serve/raw are the result
(goal: at least 0.95); the three answers must also be identical, or the comparison is void.
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
    seconds: float  # from the first piece to the last
    text: str

    @property
    def tokens_per_second(self) -> float:
        return (self.tokens - 1) / self.seconds if self.seconds > 0 and self.tokens > 1 else 0.0


class TimedWriter:
    """Stands in for the terminal: records when the first and the last piece were written."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        if text.strip("\n"):
            now = time.perf_counter()
            self.first = self.first if self.first is not None else now
            self.last = now
            self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def raw_llama(llm, prompt: str, max_tokens: int) -> Run:
    first, last, parts, n = None, 0.0, [], 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        first = first if first is not None else now
        last = now
        parts.append(chunk["choices"][0]["text"])
        n += 1  # llama-cpp-python streams one chunk per token
    return Run("raw llama-cpp-python", n, last - (first or last), "".join(parts))


def chat_path(runtime, question: str, max_tokens: int) -> Run:
    from jmed_edge.chat.cli import answer_once
    from jmed_edge.chat.session import ChatSession
    from jmed_edge.runtimes.base import SamplingParams

    session = ChatSession(runtime, params=SamplingParams(max_tokens=max_tokens, temperature=0.0))
    writer = TimedWriter()
    answer_once(session, question, out=writer)  # what `jmed-edge chat --prompt` runs once loaded
    stats = session.last.stats
    return Run("jmed-edge chat --prompt", stats.completion_tokens, writer.last - (writer.first or writer.last),
               "".join(writer.parts))  # fmt: skip


def serve_path(http: httpx.Client, url: str, question: str, max_tokens: int) -> Run:
    body = {"model": "bench", "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    first, last, parts, tokens = None, 0.0, [], 0
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
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    parts.append(piece)
    return Run("jmed-edge serve (streaming)", tokens, last - (first or last), "".join(parts))


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
    texts: dict[str, set[str]] = {}
    try:
        with (
            BackgroundServer(create_app([serve_runtime], settings)) as server,
            httpx.Client(timeout=600) as http,
        ):
            url = server.base_url + "/v1/chat/completions"
            for _ in range(args.repeats):
                for run in (raw_llama(llm, prompt, args.tokens), chat_path(chat_runtime, QUESTION, args.tokens),
                            serve_path(http, url, QUESTION, args.tokens)):  # fmt: skip
                    texts.setdefault(run.path, set()).add(run.text)
                    if run.path not in best or run.tokens_per_second > best[run.path].tokens_per_second:
                        best[run.path] = run
    finally:
        llm.close()
        chat_runtime.close()
        serve_runtime.close()
    return show(best, texts, gguf.name, args)


def show(best: dict[str, Run], texts: dict[str, set[str]], model: str, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    raw = best["raw llama-cpp-python"]
    table = Table(title=f"decode speed, {model}, n_threads=1, best of {args.repeats}")
    for column in ("path", "tokens", "tokens/s", "ratio to raw"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for run in best.values():
        ratio = run.tokens_per_second / raw.tokens_per_second if raw.tokens_per_second else 0.0
        table.add_row(run.path, str(run.tokens), f"{run.tokens_per_second:.1f}", f"{ratio:.3f}")
    console = Console()
    console.print(table)
    all_texts = set().union(*texts.values())
    same = len(all_texts) == 1
    console.print("[green]✓[/] all paths wrote the same answer" if same else
                  f"[red]✗[/] the paths wrote {len(all_texts)} different answers: the comparison is void")  # fmt: skip
    if args.json:
        record = {"model": model, "repeats": args.repeats, "same_answer": same,
                  "runs": {k: {"tokens": v.tokens, "tokens_per_second": v.tokens_per_second,
                               "ratio_to_raw": v.tokens_per_second / raw.tokens_per_second} for k, v in best.items()}}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

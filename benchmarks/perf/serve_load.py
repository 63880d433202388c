"""Load test of ``jmed-edge serve``: N concurrent clients on loopback, checked answer by answer.

    python benchmarks/perf/serve_load.py --clients 4 --requests 40 --duration 60

Serves a GGUF (default: the embedded default model converted to Q4_K_M, made once in the
cache) on 127.0.0.1 with the same app as ``jmed-edge serve``, then:

1. sends each of a few distinct prompts alone, at temperature 0, and keeps the answer;
2. runs ``--clients`` threads that send ``--requests`` requests in all (half streaming, half
   not), stopping early after ``--duration`` seconds;
3. reports requests/s, p50/p95 latency, time to first token and tokens/s, and checks that no
   request was dropped (every one answered 200, or 429 when the queue is deliberately small) and
   that each answer is the answer its prompt got alone.

An answer that is closer to another prompt's answer than to its own (by common prefix) is
cross-talk, the failure this check exists for. An answer that starts as its own and departs
from it later is reported as drift, not as a failure: llama.cpp reuses the part of a prompt
already in an instance's KV cache, and logits computed in a different batch differ in the last
bits, so greedy decoding can take another word where two are nearly tied (measured here: the
same prompt sent twice in a row answered differently from the 12th token). ``--strict``
counts drift as a failure too.

Exit status 1 when a request was dropped or crossed (or drifted, with --strict). Nothing
leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

PROMPTS = [
    "What is hypertension? Answer briefly.",
    "高血圧の治療薬を一つ挙げてください。",
    "Name one symptom of type 2 diabetes.",
    "What does an ECG measure?",
    "糖尿病の合併症を一つ挙げてください。",
    "What is the normal range of adult resting heart rate?",
    "Explain what an antibiotic does in one sentence.",
    "発熱時に注意すべきことは何ですか？",
]
LIMITS = {"clients": 64, "requests": 10_000, "duration": 3600}  # keeps a mistyped run bounded


def default_q4_k_m() -> Path:
    """The embedded default model as Q4_K_M, converted once into the cache."""
    from jmed_edge.artifacts import describe
    from jmed_edge.resources import cache_home

    out = cache_home() / "bench" / "default-gguf"
    if not (out / "Q4_K_M").is_dir():
        from jmed_edge.convert.gguf import convert_to_gguf
        from jmed_edge.models.default import materialise

        print(f"converting the default model to Q4_K_M in {out} (once) ...", file=sys.stderr)
        convert_to_gguf(materialise(), out, quants=("q4_k_m",), force=True)
    return describe(out / "Q4_K_M").model_file


@dataclass
class Result:
    prompt: int
    stream: bool
    status: int = 0
    text: str = ""
    latency: float = 0.0
    first_token: float | None = None
    completion_tokens: int = 0
    error: str = ""


@dataclass
class Report:
    model: str
    clients: int
    max_concurrency: int
    queue: int
    max_tokens: int
    sent: int = 0
    ok: int = 0
    rejected_429: int = 0
    dropped: int = 0
    exact: int = 0
    drifted: int = 0
    crossed: int = 0
    wall_seconds: float = 0.0
    requests_per_second: float = 0.0
    latency_p50: float = 0.0
    latency_p95: float = 0.0
    first_token_p50: float = 0.0
    tokens_per_second: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def send(http: httpx.Client, url: str, model: str, prompt: int, *, stream: bool, max_tokens: int) -> Result:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[prompt]}], "temperature": 0,
            "max_tokens": max_tokens, "stream": stream}  # fmt: skip
    result = Result(prompt, stream)
    started = time.perf_counter()
    try:
        if not stream:
            r = http.post(url, json=body)
            result.status = r.status_code
            if r.status_code == 200:
                data = r.json()
                result.text = data["choices"][0]["message"]["content"]
                result.completion_tokens = data["usage"]["completion_tokens"]
        else:
            body["stream_options"] = {"include_usage": True}
            with http.stream("POST", url, json=body) as r:
                result.status = r.status_code
                parts = []
                for line in r.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(chunk["error"]["message"])
                    if chunk.get("usage"):
                        result.completion_tokens = chunk["usage"]["completion_tokens"]
                    for choice in chunk.get("choices", []):
                        piece = choice["delta"].get("content") or ""
                        if piece and result.first_token is None:
                            result.first_token = time.perf_counter() - started
                        parts.append(piece)
                result.text = "".join(parts)
    except Exception as exc:  # a dropped connection, a timeout, a broken stream
        result.error = f"{type(exc).__name__}: {exc}"
    result.latency = time.perf_counter() - started
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> Report:
    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import force_offline, open_model
    from jmed_edge.serve import ServeSettings, create_app
    from jmed_edge.serve.server import BackgroundServer

    force_offline()
    gguf = Path(args.gguf) if args.gguf else default_q4_k_m()
    info = describe(gguf)
    runtimes = [open_model(info, n_threads=args.threads, n_ctx=args.ctx) for _ in range(args.max_concurrency)]
    settings = ServeSettings(model_name="bench", max_tokens_limit=args.max_tokens,
                             max_concurrency=args.max_concurrency, queue=args.queue)  # fmt: skip
    report = Report(info.name, args.clients, args.max_concurrency, args.queue, args.max_tokens)
    try:
        with BackgroundServer(create_app(runtimes, settings)) as server, httpx.Client(timeout=600) as http:
            url = server.base_url + "/v1/chat/completions"
            alone = {}
            for i in range(len(PROMPTS)):
                first = send(http, url, "bench", i, stream=False, max_tokens=args.max_tokens)
                if first.status != 200:
                    raise SystemExit(f"reference request failed: {first.status} {first.error}")
                alone[i] = first.text
            if len(set(alone.values())) < len(alone):
                raise SystemExit("two prompts got the same answer alone; cross-talk could not be told apart")
            results = load(http, url, args)
    finally:
        for runtime in runtimes:
            runtime.close()
    return summarise(report, results, alone)


def load(http: httpx.Client, url: str, args: argparse.Namespace) -> tuple[list[Result], float]:
    results: list[Result] = []
    lock = threading.Lock()
    counter = iter(range(args.requests))
    deadline = time.perf_counter() + args.duration

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            result = send(http, url, "bench", n % len(PROMPTS), stream=n % 2 == 1, max_tokens=args.max_tokens)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - started


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def summarise(report: Report, measured: tuple[list[Result], float], alone: dict[int, str]) -> Report:
    results, wall = measured
    ok = [r for r in results if r.status == 200 and not r.error]
    report.sent = len(results)
    report.ok = len(ok)
    report.rejected_429 = sum(r.status == 429 for r in results)
    report.dropped = report.sent - report.ok - report.rejected_429
    for r in results:
        if r.error or r.status not in (200, 429):
            report.problems.append(
                f"prompt {r.prompt} ({'stream' if r.stream else 'whole'}): {r.status} {r.error}"
            )
    for r in ok:
        own = common_prefix(r.text, alone[r.prompt])
        if r.text == alone[r.prompt]:
            report.exact += 1
            continue
        closest = max(alone, key=lambda i: (common_prefix(r.text, alone[i]), i == r.prompt))
        if closest != r.prompt:
            report.crossed += 1
            report.problems.append(f"prompt {r.prompt}: the answer is closer to prompt {closest}'s answer")
        else:
            report.drifted += 1
            report.notes.append(f"prompt {r.prompt}: drifted from its answer alone after {own} characters")
    report.wall_seconds = wall
    report.requests_per_second = report.ok / wall if wall else 0.0
    latencies = [r.latency for r in ok]
    report.latency_p50 = percentile(latencies, 0.5)
    report.latency_p95 = percentile(latencies, 0.95)
    report.first_token_p50 = percentile([r.first_token for r in ok if r.first_token is not None], 0.5)
    report.tokens_per_second = sum(r.completion_tokens for r in ok) / wall if wall else 0.0
    return report


def show(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"jmed-edge serve under load: {report.model}, {report.clients} clients, "
                        f"{report.max_concurrency} instance(s), queue {report.queue}")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("requests sent / answered", f"{report.sent} / {report.ok}"),
        ("rejected (429) / dropped", f"{report.rejected_429} / {report.dropped}"),
        ("answers as alone / drifted / cross-talk", f"{report.exact} / {report.drifted} / {report.crossed}"),
        ("requests/s", f"{report.requests_per_second:.2f}"),
        ("latency p50 / p95", f"{report.latency_p50:.2f} s / {report.latency_p95:.2f} s"),
        ("time to first token p50 (streamed)", f"{report.first_token_p50:.2f} s"),
        ("completion tokens/s (all clients)", f"{report.tokens_per_second:.1f}"),
        ("wall time", f"{report.wall_seconds:.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for problem in report.problems[:20]:
        console.print(f"[red]✗[/] {problem}", highlight=False)
    for note in report.notes[:20]:
        console.print(f"[yellow]~[/] {note}", highlight=False)
    if not report.problems:
        console.print("[green]✓[/] every request was answered, each with its own prompt's answer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--gguf", help="GGUF to serve (default: the embedded default model as Q4_K_M)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--requests", type=int, default=40, help="requests in all (40)")
    parser.add_argument(
        "--duration", type=float, default=60, help="stop sending after this many seconds (60)"
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (32)")
    parser.add_argument("--max-concurrency", type=int, default=1, help="model instances (1)")
    parser.add_argument(
        "--queue", type=int, default=None, help="queue size (default: enough for every client)"
    )
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per instance (1)")
    parser.add_argument("--ctx", type=int, default=2048, help="context length (2048)")
    parser.add_argument("--strict", action="store_true", help="count drift as a failure too")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    for name, limit in LIMITS.items():
        if not 0 < getattr(args, name) <= limit:
            parser.error(f"--{name} must be in 1..{limit}")
    if args.queue is None:
        args.queue = max(0, args.clients - args.max_concurrency)
    report = run(args)
    show(report)
    if args.json:
        args.json.write_text(
            json.dumps(asdict(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return 1 if report.dropped or report.crossed or (args.strict and report.drifted) else 0


if __name__ == "__main__":
    sys.exit(main())

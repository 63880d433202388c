"""``jmed-edge serve``: an OpenAI-compatible API for one artifact on this machine, offline."""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXAMPLES = """\
more examples:
  jmed-edge serve runs/gguf/Q4_K_M --port 8080 --model-name jmed --max-concurrency 2 --queue 16
  JMED_EDGE_API_KEY=$(openssl rand -hex 24) jmed-edge serve model.gguf --host 0.0.0.0

Clients: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything").
Safe defaults: listens on 127.0.0.1 only; another --host needs an API key; bodies over
--max-body-bytes get 413; max_tokens above --max-tokens-limit is clamped to it; requests beyond
--max-concurrency running and --queue waiting get 429. Prompts and answers are not logged
unless --log-content is given. The server makes no outbound connection."""


def configure(parser: argparse.ArgumentParser) -> None:
    from jmed_edge.chat.model import add_model_options
    from jmed_edge.fsutil import parse_bytes

    parser.epilog = f"{parser.epilog}\n\n{EXAMPLES}" if parser.epilog else EXAMPLES
    add_model_options(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (8000; 0 picks a free one)")
    parser.add_argument("--api-key", default=os.environ.get("JMED_EDGE_API_KEY") or None, metavar="KEY",
                        help="require Authorization: Bearer KEY (default: $JMED_EDGE_API_KEY; prefer the "
                        "variable, since other users can read command lines)")  # fmt: skip
    parser.add_argument(
        "--model-name", metavar="NAME", help="model id clients send (default: the artifact's name)"
    )
    parser.add_argument("--max-tokens-limit", type=int, default=1024, metavar="N",
                        help="largest answer in tokens; larger max_tokens are clamped to it (1024)")  # fmt: skip
    parser.add_argument("--max-concurrency", type=int, default=1, metavar="N",
                        help="model instances answering at once (1; each GGUF instance shares the "
                        "memory-mapped weights, other formats load a copy each)")  # fmt: skip
    parser.add_argument("--queue", type=int, default=8, metavar="N",
                        help="requests that may wait for a free instance; more get 429 (8)")  # fmt: skip
    parser.add_argument("--max-body-bytes", type=parse_bytes, default=1024 * 1024, metavar="SIZE",
                        help="largest request body, e.g. 1MB (1MB); larger ones get 413")  # fmt: skip
    parser.add_argument("--log-content", action="store_true",
                        help="also log prompts and answers (off: they may hold patient data)")  # fmt: skip
    parser.set_defaults(func=run)


def _setup_logging(log_content: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("jmed_edge.serve.access", "jmed_edge.serve.content"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO if name.endswith("access") or log_content else logging.WARNING)


def run(args: argparse.Namespace) -> int:
    from jmed_edge.chat.model import force_offline

    force_offline()  # before any model library is imported

    from rich.console import Console

    from jmed_edge.artifacts import describe
    from jmed_edge.chat.model import open_model, runtime_options
    from jmed_edge.serve.app import create_app
    from jmed_edge.serve.config import ServeSettings
    from jmed_edge.serve.server import bind_socket, make_server

    settings = ServeSettings(
        model_name=args.model_name or "", host=args.host, port=args.port, api_key=args.api_key or None,
        max_tokens_limit=args.max_tokens_limit, max_concurrency=args.max_concurrency, queue=args.queue,
        max_body_bytes=args.max_body_bytes, log_content=args.log_content,
    )  # fmt: skip
    settings.check()
    options = runtime_options(args)
    sock = bind_socket(settings.host, settings.port)  # a busy port fails before the slow model load
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    runtimes = []
    try:
        info = describe(args.artifact)  # a one-line error for a missing or non-model path
        settings.model_name = settings.model_name or info.name
        with console.status(f"loading {args.artifact} ({settings.max_concurrency} instance(s)) ..."):
            for _ in range(settings.max_concurrency):
                runtimes.append(open_model(info, lora=args.lora, runtime=args.runtime, **options))
        _setup_logging(settings.log_content)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        console.print(
            f"serving [bold]{settings.model_name}[/] ({info.format}, context {runtimes[0].context_length} tokens) "
            f"at http://{shown}:{port}/v1 · API key {'required' if settings.api_key else 'off (loopback only)'} · "
            f"max tokens {settings.max_tokens_limit} · {settings.max_concurrency} answering, queue {settings.queue}"
            f"{' · logging content' if settings.log_content else ''} · Ctrl-C stops"
        )
        make_server(create_app(runtimes, settings)).run(sockets=[sock])
    finally:
        sock.close()
        for runtime in runtimes:
            runtime.close()
    return 0

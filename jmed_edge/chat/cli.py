"""``jmed-edge chat``: stream answers from any artifact in the terminal, or answer one prompt."""

from __future__ import annotations

import argparse
import sys

from jmed_edge.errors import ConfigError

EXAMPLES = """\
more examples:
  jmed-edge chat runs/gguf/Q4_K_M --lora runs/lora-gguf --system "あなたは医療アシスタントです。"
  jmed-edge chat runs/merged --prompt "高血圧の第一選択薬は？" --max-tokens 128
  echo "What is HbA1c?" | jmed-edge chat model.gguf --prompt -

In the chat, end a line with \\ to continue it, or wrap several lines in \"\"\" ... \"\"\".
Commands: /reset, /save FILE (.md or .json), /stats, /help, /exit. Ctrl-C stops an answer."""


def configure(parser: argparse.ArgumentParser) -> None:
    from jmed_edge.chat.model import add_model_options

    parser.epilog = f"{parser.epilog}\n\n{EXAMPLES}" if parser.epilog else EXAMPLES
    add_model_options(parser)
    parser.add_argument("--system", metavar="TEXT", help="system prompt (sent with every question)")
    parser.add_argument(
        "--max-tokens", type=int, default=512, metavar="N", help="longest answer in tokens (512)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, metavar="T",
                        help="sampling temperature; 0 (the default) answers deterministically")  # fmt: skip
    parser.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling (1.0 = off)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="answer TEXT (or standard input for -) and exit instead of chatting")  # fmt: skip
    parser.add_argument(
        "--stats", action="store_true", help="with --prompt: print speed and token counts to stderr"
    )
    parser.set_defaults(func=run)


def sampling_from_args(args: argparse.Namespace):
    from jmed_edge.runtimes.base import SamplingParams

    if args.max_tokens < 1:
        raise ConfigError(f"--max-tokens {args.max_tokens} must be at least 1")
    if not 0 <= args.temperature <= 2:
        raise ConfigError(f"--temperature {args.temperature} is outside 0..2")
    if not 0 < args.top_p <= 1:
        raise ConfigError(f"--top-p {args.top_p} is outside (0, 1]")
    return SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
    )


def run(args: argparse.Namespace) -> int:
    from jmed_edge.chat.model import force_offline, runtime_options

    force_offline()
    params = sampling_from_args(args)
    prompt = _read_prompt(args.prompt) if args.prompt is not None else None
    runtime = _open_with_status(args, runtime_options(args))
    from jmed_edge.chat.session import ChatSession

    session = ChatSession(runtime, system=args.system, params=params)
    try:
        if prompt is not None:
            return answer_once(session, prompt, show_stats=args.stats)
        from jmed_edge.chat.loop import ChatLoop

        _enable_line_editing()
        return ChatLoop(session).run()
    finally:
        session.stop()  # a generation still running must not see its model freed under it
        runtime.close()


def _read_prompt(value: str) -> str:
    text = sys.stdin.read() if value == "-" else value
    if not text.strip():
        raise ConfigError("--prompt is empty" + (" (nothing on standard input)" if value == "-" else ""))
    return text.rstrip("\n") if value == "-" else text


def _open_with_status(args: argparse.Namespace, options: dict):
    from rich.console import Console

    from jmed_edge.chat.model import open_model

    console = Console(stderr=True)
    with console.status(f"loading {args.artifact} ...", spinner="dots"):
        return open_model(args.artifact, lora=args.lora, runtime=args.runtime, **options)


def answer_once(session, text: str, *, show_stats: bool = False, out=None) -> int:
    """Stream the answer to ``text`` to ``out`` (stdout); Ctrl-C stops it and returns 130."""
    out = out or sys.stdout
    turn = session.ask(text)
    try:
        for piece in turn:
            out.write(piece)
            out.flush()
    except KeyboardInterrupt:
        turn.cancel()
        out.write("\n")
        return 130
    out.write("\n")
    out.flush()
    session.commit(turn)
    if show_stats:
        st = turn.stats
        print(
            f"prompt {st.prompt_tokens} tokens ({st.prompt_seconds:.2f} s), answer {st.completion_tokens} tokens, "
            f"{st.decode_tokens_per_second:.1f} tokens/s, finish: {st.finish_reason}",
            file=sys.stderr,
        )
    return 0


def _enable_line_editing() -> None:
    """``input()`` edits lines with readline when it exists (wide characters, cursor keys)."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (importing it is what enables it)
        except ImportError:
            pass

"""An Ollama ``Modelfile`` beside each GGUF, with the chat template translated to Ollama's syntax.

Ollama templates are Go ``text/template`` programs over ``.Messages`` (each with ``.Role`` and
``.Content``); Hugging Face chat templates are Jinja. Jinja cannot be translated in general, so
the model's template is *recognised* instead: it is rendered (with the settings transformers
uses) on probe conversations, and a family is chosen only when its Ollama template renders every
probe exactly as the Jinja template does. A default system prompt that the Jinja template
inserts when none is given (SmolLM2 does) becomes the Modelfile's ``SYSTEM``: Ollama prepends
it as a system message in the same case.

A template that matches no family is never guessed at: the Modelfile says so in a comment and
uses Ollama's raw template ``{{ .Prompt }}`` (prompts pass through as sent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

MODELFILE = "Modelfile"
# Ollama's own default context is 2048-4096 tokens; a 7B's training context (32k-128k) would
# reserve a KV cache a CPU workstation does not have. The Modelfile says which one it chose.
MAX_NUM_CTX = 4096

Message = dict[str, str]
# Stands in for bos_token while recognising a template: some models' BOS is also their turn
# opener (SmolLM2's is <|im_start|>), so comparing the rendered text with the BOS string would
# mistake the first turn for a BOS.
_BOS_MARK = "\ue000BOS\ue000"


@dataclass(frozen=True)
class ChatFamily:
    """A chat layout: its Ollama template, and the same layout in Python to compare against Jinja."""

    name: str
    template: str  # Go text/template over .Messages, as Ollama executes it
    turn: Callable[[str, str], str]  # (role, content) -> one rendered message
    generation: str  # what opens the assistant's reply
    stops: tuple[str, ...]

    def render(self, messages: list[Message]) -> str:
        return "".join(self.turn(m["role"], m["content"]) for m in messages) + self.generation


# Rows: the layouts of the templates these model families ship (tokenizer_config.json), written
# as Ollama's library writes them (ollama.com/library/qwen2, /llama3), without tool calls.
FAMILIES: tuple[ChatFamily, ...] = (
    ChatFamily(
        name="chatml",  # Qwen2/2.5, SmolLM2, many Japanese fine-tunes
        template=(
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
            "<|im_start|>assistant\n"
        ),
        turn=lambda role, content: f"<|im_start|>{role}\n{content}<|im_end|>\n",
        generation="<|im_start|>assistant\n",
        stops=("<|im_start|>", "<|im_end|>"),
    ),
    ChatFamily(
        name="llama3",  # Llama 3 / 3.x instruct and fine-tunes such as ELYZA-JP and Swallow
        template=(
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
            "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        turn=lambda role, content: f"<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation="<|start_header_id|>assistant<|end_header_id|>\n\n",
        stops=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
)

# Conversations the translation must reproduce exactly (each ends with the user: a reply is due).
PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "高血圧の第一選択薬は?"},),
    (
        {"role": "system", "content": "あなたは医療アシスタントです。"},
        {"role": "user", "content": "What is HbA1c?\nAnswer briefly."},
    ),
    (
        {"role": "user", "content": "Aspirin 100 mg の適応は?"},
        {"role": "assistant", "content": "抗血小板療法です。"},
        {"role": "user", "content": "禁忌は?"},
    ),
    (
        {"role": "system", "content": "Answer in Japanese."},
        {"role": "user", "content": "What is sepsis?"},
        {"role": "assistant", "content": "敗血症です。"},
        {"role": "user", "content": "Treatment?"},
    ),
)


def render_jinja(template: str, messages: list[Message], bos: str = "", eos: str = "") -> str:
    """``template`` rendered the way transformers' ``apply_chat_template`` renders it."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
        x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


@dataclass(frozen=True)
class Translation:
    family: ChatFamily | None
    system: str | None  # the default system prompt the Jinja template inserts
    reason: str  # why no family matched, when none did
    prefix: str = ""  # a BOS the Jinja template writes and llama.cpp does not add: kept in TEMPLATE
    trims: bool = False  # the Jinja template strips whitespace around messages (Go templates cannot)

    @property
    def template(self) -> str:
        return self.prefix + self.family.template if self.family else "{{ .Prompt }}"


def translate(template: str | None, bos: str = "", eos: str = "", add_bos: bool = False) -> Translation:
    """The family whose Ollama template renders every probe like ``template``, or why none does.

    ``add_bos``: llama.cpp adds BOS itself, so a BOS the Jinja template writes is left out of
    Ollama's template (it would be there twice); without it, the template writes it.
    """
    if not template:
        return Translation(None, None, "the GGUF has no chat template (tokenizer.chat_template)")

    try:  # BOS rendered as a marker: whether the template writes bos_token is then unambiguous
        marked = [render_jinja(template, list(p), _BOS_MARK, eos) for p in PROBES]
    except Exception as exc:  # a template error is a reason to fall back, never to fail the conversion
        return Translation(None, None, f"its Jinja template fails on the probe conversations ({exc})")
    writes_bos = all(out.startswith(_BOS_MARK) for out in marked)
    expected = [out.removeprefix(_BOS_MARK) if writes_bos else out for out in marked]
    if any(_BOS_MARK in out for out in expected):
        return Translation(None, None, "its Jinja template writes bos_token inside the prompt")
    prefix = bos if writes_bos and not add_bos else ""  # llama.cpp adds BOS itself when the GGUF says so
    for family in FAMILIES:
        system = _default_system(family, expected[0], PROBES[0])
        matched = True
        for probe, want in zip(PROBES, expected, strict=True):
            messages = list(probe)
            if system is not None and messages[0]["role"] != "system":
                messages = [{"role": "system", "content": system}, *messages]
            if family.render(messages) != want:
                matched = False
                break
        if matched:
            return Translation(family, system, "", prefix, _trims(template, family, eos))
    names = ", ".join(f.name for f in FAMILIES)
    return Translation(None, None, f"it renders like none of the chat layouts translated here ({names})")


def _trims(template: str, family: ChatFamily, eos: str) -> bool:
    """Whether the Jinja template strips a message's surrounding whitespace (Llama 3's does)."""
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": " 発熱 \n"}]
    try:
        out = render_jinja(template, messages, _BOS_MARK, eos)
    except Exception:
        return False
    return out.removeprefix(_BOS_MARK) != family.render(messages)


def _default_system(family: ChatFamily, rendered: str, probe: tuple[Message, ...]) -> str | None:
    """The system prompt ``rendered`` (the template's output without one) shows, if any."""
    opening = family.turn("system", "\0").split("\0")[0]
    closing = family.turn("system", "\0").split("\0")[1]
    if not rendered.startswith(opening):
        return None
    end = rendered.find(closing, len(opening))
    return rendered[len(opening) : end] if end >= 0 else None


def _quote(text: str) -> str:
    """A Modelfile value in triple quotes (multi-line safe); a value containing them is JSON-quoted."""
    return f'"""{text}"""' if '"""' not in text else json.dumps(text, ensure_ascii=False)


def modelfile_text(
    gguf_name: str,
    template: str | None,
    *,
    bos: str = "",
    eos: str = "",
    add_bos: bool = False,
    n_ctx_train: int = 0,
) -> tuple[str, Translation]:
    """The Modelfile for ``gguf_name`` (a file beside it) and what the translation found."""
    found = translate(template, bos, eos, add_bos)
    num_ctx = min(n_ctx_train, MAX_NUM_CTX) if n_ctx_train > 0 else MAX_NUM_CTX
    lines = [f"# Ollama Modelfile written by jmed-edge: ollama create NAME -f {MODELFILE}"]
    if found.family:
        lines.append(
            f"# TEMPLATE: the model's chat template ({found.family.name} layout), translated to Ollama's "
            "syntax and checked to render the same prompts"
        )
        if found.trims:
            lines.append(
                "# note: the chat template strips whitespace around each message and Ollama's cannot: "
                "send messages without leading or trailing whitespace"
            )
    else:
        lines += [
            f"# The model's chat template was not translated: {found.reason}.",
            "# TEMPLATE is Ollama's raw template: prompts pass through unchanged, so format them with",
            "# the model's own chat template (tokenizer.chat_template in the GGUF) before sending.",
        ]
    lines += [f"FROM ./{gguf_name}", f"TEMPLATE {_quote(found.template)}"]
    if found.system:
        lines.append(f"SYSTEM {_quote(found.system)}")
    stops = list(found.family.stops) if found.family else []
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    trained = f"trained with {n_ctx_train}" if n_ctx_train else "training context unknown"
    lines.append(
        f"# num_ctx: at most {MAX_NUM_CTX} on a CPU workstation ({trained}); raise it if memory allows"
    )
    lines.append(f"PARAMETER num_ctx {num_ctx}")
    return "\n".join(lines) + "\n", found


def source_tokens(source: Path) -> tuple[str, str]:
    """(BOS, EOS) token strings from a Hugging Face folder's tokenizer_config.json ("" when unset)."""
    path = Path(source) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def text(key: str) -> str:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else ""

    return text("bos_token"), text("eos_token")


def write_modelfile(folder: Path, gguf_file: Path, source: Path) -> Translation:
    """Write ``folder/Modelfile`` for ``gguf_file`` (in ``folder``), from its metadata and the source."""
    from jmed_edge.convert.ggufinfo import KEY_ADD_BOS, KEY_ARCH, KEY_TEMPLATE, read_gguf

    info = read_gguf(gguf_file)
    bos, eos = source_tokens(source)
    n_ctx = int(info.get(f"{info.get(KEY_ARCH)}.context_length", 0) or 0)
    text, found = modelfile_text(
        gguf_file.name,
        info.get(KEY_TEMPLATE),
        bos=bos,
        eos=eos,
        add_bos=bool(info.get(KEY_ADD_BOS, False)),
        n_ctx_train=n_ctx,
    )
    (Path(folder) / MODELFILE).write_text(text, encoding="utf-8")
    return found


def record(found: Translation) -> dict[str, object]:
    """What a manifest says about the Modelfile."""
    return {
        "file": MODELFILE,
        "template": found.family.name if found.family else "raw",
        "system_prompt": found.system is not None,
        "not_translated": found.reason or None,
    }

"""Ollama Modelfiles: the translated TEMPLATE renders like the model's Jinja chat template.

Ollama itself is not installable from PyPI or Debian, so the Modelfile is read with a parser of
its grammar (commands, triple-quoted values, comments) and TEMPLATE is executed with Go
``text/template`` semantics (trim markers, ``range``/``if``/``else``/``end``, field access) by the
small evaluator below, over the data Ollama passes (``.Messages``, with the Modelfile's SYSTEM
prepended when a request has no system message). Anything outside that subset raises, so a
template using more than the evaluator knows fails here instead of passing unchecked.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from jmed_edge.convert.modelfile import PROBES, modelfile_text, render_jinja, translate

# --- a Modelfile reader and a Go text/template subset ------------------------------------------------

_COMMANDS = {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(COMMAND, value) pairs, following Ollama's parser: ``#`` comments, triple-quoted multi-line
    values, JSON-quoted values, or the rest of the line."""
    out, pos = [], 0
    while pos < len(text):
        line_end = text.find("\n", pos)
        line_end = len(text) if line_end < 0 else line_end
        line = text[pos:line_end]
        if not line.strip() or line.lstrip().startswith("#"):
            pos = line_end + 1
            continue
        command, _, rest = line.strip().partition(" ")
        assert command.upper() in _COMMANDS, f"unknown Modelfile command {command!r}"
        start = pos + line.index(command) + len(command) + 1
        rest = text[start:].lstrip(" ")
        if rest.startswith('"""'):
            end = rest.index('"""', 3)
            value, consumed = rest[3:end], end + 3
        elif rest.startswith('"'):
            value, consumed = json.JSONDecoder().raw_decode(rest)
        else:
            value = rest.split("\n", 1)[0].strip()
            consumed = len(rest.split("\n", 1)[0])
        out.append((command.upper(), value))
        pos = start + (len(text[start:]) - len(rest)) + consumed
        nl = text.find("\n", pos)
        assert text[pos : nl if nl >= 0 else len(text)].strip() == "", "text after a value"
        pos = len(text) if nl < 0 else nl + 1
    return out


_ACTION = re.compile(r"\{\{(- )?\s*(.*?)\s*( -)?\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        tokens += [("text", text), ("action", m.group(2))]
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    return tokens


def _tree(tokens: list[tuple[str, str]], i: int = 0, stop=("end",)) -> tuple[list, int, str]:
    nodes: list = []
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
        elif value in stop or value == "else":
            return nodes, i, value
        elif value.startswith(("range ", "if ")):
            keyword, expr = value.split(" ", 1)
            body, i, ended = _tree(tokens, i, ("end",))
            other: list = []
            if ended == "else":
                other, i, _ = _tree(tokens, i, ("end",))
            nodes.append((keyword, expr, body, other))
        elif re.fullmatch(r"(\.[A-Za-z]+)+", value):
            nodes.append(("field", value))
        else:
            raise NotImplementedError(f"Go template action not in the tested subset: {{{{ {value} }}}}")
    return nodes, i, ""


def _field(dot: Any, expr: str) -> Any:
    for name in expr.strip(".").split("."):
        dot = dot[name] if isinstance(dot, dict) else getattr(dot, name)
    return dot


def _run(nodes: list, dot: Any) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(str(_field(dot, node[1])))
        elif node[0] == "range":
            items = _field(dot, node[1])
            out += [_run(node[2], item) for item in items] if items else [_run(node[3], dot)]
        elif node[0] == "if":
            out.append(_run(node[2] if _field(dot, node[1]) else node[3], dot))
    return "".join(out)


def execute_go_template(template: str, data: dict[str, Any]) -> str:
    nodes, _, _ = _tree(_tokens(template))
    return _run(nodes, data)


def ollama_render(modelfile: str, messages: list[dict[str, str]]) -> str:
    """What Ollama's /api/chat renders for ``messages`` with this Modelfile."""
    commands = dict(parse_modelfile(modelfile))
    if commands.get("SYSTEM") and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": commands["SYSTEM"]}, *messages]
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    data = {
        "System": system,
        "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
        "Prompt": "",
        "Response": "",
    }
    return execute_go_template(commands["TEMPLATE"], data)


def test_the_evaluator_follows_go_trim_markers() -> None:
    assert execute_go_template("a  {{- .X -}}  b\n{{ .X }}", {"X": "1"}) == "a1b\n1"
    assert execute_go_template("{{ range .L }}[{{ .V }}]{{ else }}none{{ end }}", {"L": []}) == "none"
    with pytest.raises(NotImplementedError):
        execute_go_template("{{ len .L }}", {"L": []})


# --- templates of real model families --------------------------------------------------------------

SMOLLM2 = (  # SmolLM2-*-Instruct's tokenizer_config.json
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN25 = (  # Qwen2.5-Instruct's template without its tool-calling branches
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "{%- else %}\n"
    "    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)
LLAMA3 = (  # Meta-Llama-3-8B-Instruct's tokenizer_config.json
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA31_DATED = (  # Llama 3.1 writes dates into the system turn: no fixed Ollama template matches
    "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}<|eot_id|>"
    "{% for message in messages %}{% if message['role'] != 'system' %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] "
    "| trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
ALTERNATING = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}[{{ message['content'] }}]{% endfor %}"
)

# A conversation none of the probes has: three turns, Japanese, a newline inside a message.
EXTRA = [
    {"role": "system", "content": "あなたは日本の医師国家試験の解説者です。"},
    {"role": "user", "content": "問1: 急性虫垂炎の所見は?\na. Murphy徴候\nb. McBurney点の圧痛"},
    {"role": "assistant", "content": "b です。"},
    {"role": "user", "content": "理由は?"},
    {"role": "assistant", "content": "McBurney点は右下腹部です。"},
    {"role": "user", "content": "ありがとう"},
]


@pytest.mark.parametrize(
    "template,bos,add_bos,family,system",
    [
        (SMOLLM2, "", False, "chatml", SMOLLM2_SYSTEM),
        # SmolLM2's tokenizer_config.json: its BOS is also the turn opener, and the template never writes it
        (SMOLLM2, "<|im_start|>", False, "chatml", SMOLLM2_SYSTEM),
        (QWEN25, "", False, "chatml", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
        (LLAMA3, "<|begin_of_text|>", True, "llama3", None),
        (LLAMA3, "<|begin_of_text|>", False, "llama3", None),  # BOS kept in TEMPLATE
    ],
)
def test_translated_template_renders_like_the_jinja_template(template, bos, add_bos, family, system) -> None:
    text, found = modelfile_text("m-Q4_K_M.gguf", template, bos=bos, eos="<|eot|>", add_bos=add_bos)
    assert found.family is not None and found.family.name == family and found.system == system
    commands = parse_modelfile(text)
    assert commands[0] == ("FROM", "./m-Q4_K_M.gguf")
    assert ("SYSTEM", system) in commands if system else all(c != "SYSTEM" for c, _ in commands)
    assert ("PARAMETER", "num_ctx 4096") in commands
    for stop in found.family.stops:
        assert ("PARAMETER", f"stop {json.dumps(stop)}") in commands
    assert found.trims == (template is LLAMA3) and ("strips whitespace" in text) == found.trims
    for messages in [*map(list, PROBES), EXTRA, EXTRA[1:]]:
        want = render_jinja(template, messages, bos)
        if add_bos and "bos_token" in template:  # llama.cpp adds the BOS the Jinja template writes
            assert want.startswith(bos)
            want = want[len(bos) :]
        assert ollama_render(text, messages) == want


@pytest.mark.parametrize(
    "template,reason",
    [
        (GEMMA, "renders like none of the chat layouts"),
        (LLAMA31_DATED, "renders like none of the chat layouts"),
        (ALTERNATING, "fails on the probe conversations (System role not supported)"),
        (None, "the GGUF has no chat template"),
    ],
)
def test_a_template_that_cannot_be_translated_falls_back_to_raw(template, reason) -> None:
    text, found = modelfile_text("m-Q8_0.gguf", template, bos="<bos>", eos="<eos>", add_bos=True)
    assert found.family is None and reason in found.reason
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "was not translated" in comments and reason in comments and "raw template" in comments
    commands = parse_modelfile(text)
    assert ("TEMPLATE", "{{ .Prompt }}") in commands  # never a wrong template
    assert ("PARAMETER", 'stop "<eos>"') in commands
    assert ollama_render(text, [{"role": "user", "content": "x"}]) == ""  # chat: nothing invented
    assert execute_go_template(dict(commands)["TEMPLATE"], {"Prompt": "as sent\n"}) == "as sent\n"


def test_the_default_model_family_is_found_on_a_template_like_its_own() -> None:
    assert translate(SMOLLM2).family.name == "chatml"  # type: ignore[union-attr]
    text, _ = modelfile_text("x.gguf", SMOLLM2, n_ctx_train=8192)
    assert "PARAMETER num_ctx 4096" in text and "trained with 8192" in text
    text, _ = modelfile_text("x.gguf", SMOLLM2, n_ctx_train=2048)
    assert "PARAMETER num_ctx 2048" in text

"""``jmed-edge chat --lora``: a GGUF LoRA applied at run time to the tiny fixture's GGUF."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jmed_edge.convert.llamacpp_tools import tools_status

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"),
]

QUESTION = "高血圧の患者に何を確認しますか？"


@pytest.fixture(scope="module")
def base_and_lora(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from jmed_edge.convert.gguf import convert_to_gguf
    from jmed_edge.convert.lora_gguf import convert_lora

    work = tmp_path_factory.mktemp("chat-lora")
    base = convert_to_gguf(tiny_llama, work / "base", quants=(), verify=False)["F16"]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                  task_type="CAUSAL_LM"))  # fmt: skip
    torch.manual_seed(3)
    with torch.no_grad():  # a fresh adapter has B = 0 (no effect); give it a strong one
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(work / "adapter")
    lora = convert_lora(work / "adapter", work / "lora", base_gguf=base, verify=False)
    return base, lora


def chat_answer(capsys, *argv: object) -> str:
    from jmed_edge.chat.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([str(a) for a in argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_lora_changes_the_answer_as_the_runtime_applies_it(base_and_lora, capsys):
    from jmed_edge.artifacts import describe
    from jmed_edge.runtimes.base import GenerationStats, SamplingParams, open_runtime

    base, lora = base_and_lora
    plain = chat_answer(capsys, base, "--prompt", QUESTION, "--max-tokens", "16", "--threads", "1")
    adapted = chat_answer(
        capsys, base, "--lora", lora, "--prompt", QUESTION, "--max-tokens", "16", "--threads", "1"
    )
    assert plain != adapted
    runtime = open_runtime(base, n_threads=1, lora_path=describe(lora).model_file)
    try:
        prompt = runtime.render_chat([{"role": "user", "content": QUESTION}])
        direct = "".join(runtime.generate(prompt, SamplingParams(max_tokens=16), GenerationStats()))
    finally:
        runtime.close()
    assert adapted == direct + "\n"


def test_lora_on_a_non_gguf_model_is_refused(base_and_lora, tiny_llama, capsys):
    from jmed_edge.errors import ConfigError

    _, lora = base_and_lora
    with pytest.raises(ConfigError, match="--lora needs a GGUF ARTIFACT"):
        chat_answer(capsys, tiny_llama, "--lora", lora, "--prompt", "x")

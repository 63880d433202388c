"""The two runtimes agree with each other on the same weights, and each keeps its own promises.

The reference pair is the embedded default model as a Hugging Face folder and its F16 GGUF
(converted here with llama.cpp's own converter), so differences are only F16 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jmed_edge.errors import ArtifactError, DependencyError
from jmed_edge.runtimes import GenerationStats, SamplingParams, open_runtime
from jmed_edge.runtimes.base import RUNTIMES, ChatTemplateView, StopMatcher, log_softmax, stream_generation
from jmed_edge.testing.numerics import (
    F16_VS_FP32_KL,
    F16_VS_FP32_OPTION_ATOL,
    LLAMACPP_CONTINUATION_ATOL,
    TORCH_LOGPROB_ATOL,
)

PROBES = [
    "患者は65歳の男性で、高血圧と2型糖尿病の既往がある。",
    "Aspirin 100 mg was given; HbA1c 7.8%.",
    "  two leading spaces and\nnew lines\n\n",
]
MCQ = (
    "Question: Which drug is an antiplatelet agent?\nA. aspirin\nB. insulin\nC. metformin\nD. heparin\n"
    "Answer:"
)


@pytest.fixture(scope="module")
def pair(default_model: Path, default_f16: Path):
    hf = open_runtime(default_model)
    gguf = open_runtime(default_f16, n_threads=2)
    yield hf, gguf
    hf.close()
    gguf.close()


@pytest.mark.slow
def test_tokenize_and_chat_template_agree(pair) -> None:
    hf, gguf = pair
    for text in PROBES:
        assert hf.tokenize(text, add_special=True) == gguf.tokenize(text, add_special=True), text
    messages = [{"role": "user", "content": "胸痛の鑑別は？"}]
    rendered = hf.render_chat(messages)
    assert gguf.render_chat(messages) == rendered
    assert hf.tokenize(rendered, add_special=True) == gguf.tokenize(rendered, add_special=True)
    assert ChatTemplateView(gguf).apply_chat_template(messages, tokenize=False) == rendered


@pytest.mark.slow
def test_logits_agree_between_runtimes(pair) -> None:
    hf, gguf = pair
    ids = hf.tokenize(PROBES[0] + PROBES[1], add_special=True)
    a, b = hf.logits(ids), gguf.logits(ids)
    assert a.shape == b.shape == (len(ids), 49152)
    assert a.dtype == b.dtype == np.float32
    p = np.exp(log_softmax(a))
    kl = float((p * (log_softmax(a) - log_softmax(b))).sum(-1).mean())
    assert kl < F16_VS_FP32_KL, kl
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95


@pytest.mark.slow
def test_llamacpp_scores_come_from_raw_logits(pair) -> None:
    """Scoring from the saved prompt state equals the log-likelihood read off full logits."""
    _, gguf = pair
    continuation = " aspirin, because it inhibits platelets"
    [score] = gguf.score_continuations(MCQ, [continuation])
    ctx = gguf.tokenize(MCQ, add_special=True)
    full = gguf.tokenize(MCQ + continuation, add_special=True)
    lp = log_softmax(gguf.logits(full))
    expected = sum(lp[i - 1, full[i]] for i in range(len(ctx), len(full)))
    assert score.n_tokens == len(full) - len(ctx) > 1
    # Scoring and logits() split the batch differently: llama.cpp's own spread, not an error.
    assert score.logprob == pytest.approx(expected, abs=LLAMACPP_CONTINUATION_ATOL)


@pytest.mark.slow
def test_continuation_scores_agree_and_hf_batching_is_invisible(pair) -> None:
    hf, gguf = pair
    options = [" A", " B", " C", " D", " aspirin", " heparin sodium"]
    a = hf.score_continuations(MCQ, options)
    b = gguf.score_continuations(MCQ, options)
    assert [s.n_tokens for s in a] == [s.n_tokens for s in b]
    assert np.argmax([s.logprob for s in a]) == np.argmax([s.logprob for s in b])
    assert np.allclose([s.logprob for s in a], [s.logprob for s in b], atol=F16_VS_FP32_OPTION_ATOL)
    # Left padding in a batch of prompts of different lengths changes nothing.
    short = "Q: 1+1?\nA. 2\nB. 3\nAnswer:"
    batched = hf.score_batch([(MCQ, options), (short, [" A", " B"])])
    alone = hf.score_continuations(short, [" A", " B"])
    assert [s.logprob for s in batched[0]] == pytest.approx([s.logprob for s in a], abs=TORCH_LOGPROB_ATOL)
    assert [s.logprob for s in batched[1]] == pytest.approx(
        [s.logprob for s in alone], abs=TORCH_LOGPROB_ATOL
    )
    # Prompts sharing a long prefix: the prefix runs once and its KV cache is reused; the
    # numbers equal those read off the full logits of each prompt alone.
    letters = [" A", " B", " C", " D"]
    contexts = [MCQ, MCQ.replace("heparin", "warfarin"), MCQ + " Final"]
    for context, scores in zip(contexts, hf.score_batch([(c, letters) for c in contexts]), strict=True):
        ids = hf.tokenize(context, add_special=True)
        last = log_softmax(hf.logits(ids))[-1]
        expected = [last[hf.tokenize(context + x, add_special=True)[-1]] for x in letters]
        assert [s.logprob for s in scores] == pytest.approx(expected, abs=TORCH_LOGPROB_ATOL)


@pytest.mark.slow
def test_generation_streams_and_counts(pair) -> None:
    hf, gguf = pair
    prompt = hf.render_chat([{"role": "user", "content": "What is hypertension?"}])
    texts = []
    for runtime in (hf, gguf):
        stats = GenerationStats()
        pieces = list(runtime.generate(prompt, SamplingParams(max_tokens=12), stats))
        assert stats.prompt_tokens == len(hf.tokenize(prompt, add_special=True))
        assert 0 < stats.completion_tokens <= 12
        assert stats.finish_reason in ("stop", "length")
        assert stats.prompt_seconds > 0
        texts.append("".join(pieces))
    assert texts[0][:10] == texts[1][:10]  # greedy, same weights: same start
    # A stop string ends the stream before it is shown.
    word = texts[0].split()[1] if len(texts[0].split()) > 1 else texts[0][3:6]
    stats = GenerationStats()
    stopped = "".join(gguf.generate(prompt, SamplingParams(max_tokens=12, stop=[word]), stats))
    assert word not in stopped and stats.finish_reason == "stop"


def test_double_bos_is_never_added(tiny_llama: Path) -> None:
    runtime = open_runtime(tiny_llama)
    rendered = runtime.render_chat([{"role": "user", "content": "hello"}])
    ids = runtime.tokenize(rendered, add_special=True)
    bos = runtime.tokenizer.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    assert runtime.tokenize("hello", add_special=True)[0] == bos


def test_stop_matcher_holds_back_partial_stops() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("answer is c #") == "answer is c "
    assert matcher.feed("#") == ""
    assert matcher.feed("# next") == "" and matcher.stopped


def _run(tokens, params, text=None, end=99, consume=lambda piece: None):
    stats = GenerationStats()
    pieces = []
    for piece in stream_generation(
        iter(tokens), text or (lambda t: f"<{t}>"), lambda t: t == end, params, stats
    ):
        consume(piece)
        pieces.append(piece)
    return "".join(pieces), stats


def test_generation_loop_stops_for_every_reason() -> None:
    out, stats = _run([1, 2, 3, 99, 4], SamplingParams(max_tokens=10))
    assert (out, stats.finish_reason, stats.completion_tokens) == ("<1><2><3>", "stop", 3)
    assert stats.decode_steps == 3  # tokens 2, 3 and the end token after the prompt pass
    out, stats = _run([1, 2, 3, 4], SamplingParams(max_tokens=2))
    assert (out, stats.finish_reason, stats.completion_tokens) == ("<1><2>", "length", 2)
    out, stats = _run([1, 2, 3], SamplingParams(max_tokens=0))
    assert (out, stats.completion_tokens) == ("", 0)
    out, stats = _run([1, 2, 3, 4], SamplingParams(max_tokens=10, stop=["<3>"]))
    assert (out, stats.finish_reason) == ("<1><2>", "stop")
    out, stats = _run([1, 2], SamplingParams(max_tokens=10))  # the source ran dry
    assert (out, stats.finish_reason) == ("<1><2>", "length")


def test_generation_loop_closes_its_source_and_times_only_itself() -> None:
    import time

    closed = []

    def source():
        try:
            yield from range(1, 50)
        finally:
            closed.append(True)

    stats = GenerationStats()
    stream = stream_generation(source(), str, lambda t: False, SamplingParams(max_tokens=40), stats)
    next(stream)
    time.sleep(0.3)  # the caller is slow: not the model's decode time
    next(stream)
    stream.close()
    assert closed == [True] and stats.finish_reason == "cancelled"
    assert stats.decode_seconds < 0.1 and stats.completion_tokens == 2


def test_missing_runtime_library_is_one_clear_line(tiny_llama: Path, monkeypatch) -> None:
    monkeypatch.setitem(
        RUNTIMES._entries, "hf", type(RUNTIMES._entries["hf"])("hf", "no_such_module_xyz:Runtime")
    )
    monkeypatch.delitem(RUNTIMES._loaded, "hf", raising=False)
    with pytest.raises(DependencyError, match="not installed"):
        open_runtime(tiny_llama)


def test_gguf_lora_without_base_is_refused(tmp_path: Path) -> None:
    from jmed_edge.artifacts import ArtifactInfo
    from jmed_edge.runtimes.llamacpp import LlamaCppRuntime

    lora = tmp_path / "adapter.gguf"
    lora.write_bytes(b"GGUF")
    info = ArtifactInfo(tmp_path, "gguf-lora", "gguf-lora", lora, None, "adapter")
    with pytest.raises(ArtifactError, match="base GGUF"):
        LlamaCppRuntime(info)


def test_peft_adapter_loads_base_plus_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    adapter = open_runtime(tmp_path / "adapter")  # base found through adapter_config.json
    plain = open_runtime(tiny_llama)
    ids = plain.tokenize("Aspirin 100 mg", add_special=True)
    with_lora, without = adapter.logits(ids), plain.logits(ids)
    assert with_lora.shape == without.shape
    assert float(np.abs(with_lora - without).max()) > 1e-3  # the adapter is applied
    assert adapter.tokenize("Aspirin 100 mg", add_special=True) == ids


def test_a_quantized_gguf_on_cpu_is_read_not_mapped(default_gguf: Path, default_f16: Path) -> None:
    """llama.cpp repacks quantized weights for the CPU; a mapped file would stay resident beside
    that copy (a 7B Q4_K_M: 7.69 GB RSS mapped, 4.69 GB read). Floats stay mapped (shared, no copy)."""
    from jmed_edge.runtimes.llamacpp import _header, _mmap_pays

    f16 = next(Path(default_f16).glob("*.gguf"))
    quantized, floats = _header(default_gguf), _header(f16)
    assert _mmap_pays(quantized, 0) is False and _mmap_pays(floats, 0) is True
    assert _mmap_pays(quantized, -1) is True  # offloaded layers live on the GPU
    rt = open_runtime(default_gguf, n_threads=1, n_ctx=512)
    try:
        import llama_cpp

        assert rt.use_mmap is False and rt.llm.model_params.load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE
        assert rt.tokenize("hello")  # loads and runs from the copy read into memory
    finally:
        rt.close()

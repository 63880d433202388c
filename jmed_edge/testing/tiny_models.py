"""Build tiny Llama and Qwen2 causal LMs with a small bilingual (ja + en) BPE tokenizer.

They are random-weight models of a few hundred thousand parameters, built locally in a few
seconds with no network, in the same on-disk layout as a real Hugging Face checkpoint
(safetensors, tokenizer.json, tokenizer_config.json with a chat template). Every stage can
run on them, which is what most tests do.

Each family gets the tokenizer style of its real counterpart: a Llama-3-like tokenizer (BOS
added, digits grouped in threes) and a Qwen2-like one (no BOS, single digits). A tokenizer
trained here has a vocabulary llama.cpp's converter has never seen, so its pre-tokenizer cannot
be recognised by hash; the fixture declares the llama.cpp name of the pre-tokenizer whose regex
it uses in its manifest (``details.pre_tokenizer``) for the converter to use, explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jmed_edge.manifest import Manifest

# Regexes copied from the tokenizers of Llama 3 and Qwen2 (their tokenizer.json pre_tokenizer).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# A few KB of bilingual medical text: enough merges for Japanese words and English subwords.
CORPUS = """\
患者は65歳の男性で、高血圧と2型糖尿病の既往がある。血圧は152/94 mmHg、HbA1cは7.8%であった。
胸痛を主訴に救急外来を受診した。心電図でST上昇を認め、急性心筋梗塞が疑われた。
アスピリン100 mgを内服し、経皮的冠動脈インターベンションが行われた。
発熱、咳嗽、呼吸困難があり、胸部X線で右下肺野に浸潤影を認めた。市中肺炎と診断した。
インスリン療法中の患者では低血糖に注意する。冷汗、動悸、意識障害が出現したらブドウ糖を投与する。
慢性腎臓病ではeGFRの低下に応じて薬剤の用量を調整する。メトホルミンは高度腎機能障害で禁忌である。
小児の発熱では脱水に注意し、水分摂取を促す。けいれんが5分以上続く場合は救急搬送する。
ﾅｰｽｺｰﾙ、ｹﾝｻ結果、ＣＲＰ　３．２ mg/dL、体温３８．５℃。
お薬は食後に1日3回、1回1錠ずつ服用してください。副作用として眠気が出ることがあります。
A 65-year-old man with hypertension and type 2 diabetes presented with chest pain.
His blood pressure was 152/94 mmHg and his HbA1c was 7.8%. The ECG showed ST elevation.
Aspirin 100 mg was given and percutaneous coronary intervention was performed.
Community-acquired pneumonia presents with fever, cough and dyspnea; the chest X-ray shows an infiltrate.
Patients on insulin should recognise hypoglycemia: sweating, palpitations and confusion.
In chronic kidney disease, adjust drug doses to the eGFR. Metformin is contraindicated in severe renal impairment.
Take one tablet three times a day after meals. This medicine may cause drowsiness.
def dose(weight_kg): return weight_kg * 15  # mg/kg, max 1000 mg
"""


@dataclass(frozen=True)
class TinySpec:
    family: str  # "llama" or "qwen2"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512
    max_positions: int = 512
    init_std: float = 0.2  # larger than real init: peaked logits make top-1 parity meaningful
    seed: int = 0


def _train_tokenizer(spec: TinySpec):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    llama = spec.family == "llama"
    specials = (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        if llama
        else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_REGEX if llama else QWEN2_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    if llama:
        from tokenizers import processors

        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A $B",
            special_tokens=[("<|begin_of_text|>", bos)],
        )
    return tok, specials


def _wrap_tokenizer(spec: TinySpec):
    from transformers import PreTrainedTokenizerFast

    tok, _ = _train_tokenizer(spec)
    if spec.family == "llama":
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            pad_token="<|end_of_text|>",
            chat_template=LLAMA3_TEMPLATE,
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def _model_config(spec: TinySpec, tokenizer):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        initializer_range=spec.init_std,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.family == "llama":
        return LlamaConfig(**common, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False)
    if spec.family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    raise ValueError(f"unknown tiny family {spec.family!r}; use 'llama' or 'qwen2'")


def build_tiny_model(out: Path, family: str = "llama", **overrides: object) -> Path:
    """Write a tiny model folder (weights, tokenizer, chat template, manifest) to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = TinySpec(family=family, **overrides)  # type: ignore[arg-type]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _wrap_tokenizer(spec)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(_model_config(spec, tokenizer), dtype=torch.float32)
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    Manifest(
        kind="model",
        format="hf-safetensors",
        name=f"tiny-{family}",
        config={k: getattr(spec, k) for k in spec.__dataclass_fields__},
        license="apache-2.0",
        details={
            "role": "test fixture (random weights)",
            "pre_tokenizer": "llama-bpe" if family == "llama" else "qwen2",
        },
    ).seal(out)
    return out

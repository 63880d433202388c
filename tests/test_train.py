"""Training on tiny models: loss goes down, adapters round-trip, resume is exact, bad input fails early."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jmed_edge.errors import ArtifactError, ConfigError, ModelError
from jmed_edge.manifest import parent_record, read_manifest
from jmed_edge.train import (
    TrainingInterrupted,
    adapter_matches,
    checkpoints_dir,
    last_checkpoint,
    load_recipe,
    recipe_fingerprint,
    run_training,
)

RECORDS = [
    ("高血圧の治療について説明してください。", "", "生活習慣の改善と降圧薬による治療を行います。"),
    ("What is the first-line drug for type 2 diabetes?", "", "Metformin, with diet and exercise."),
    ("次の症状から考えられる疾患は?", "発熱、咳嗽、呼吸困難", "市中肺炎が考えられます。"),
    (
        "How is hypoglycemia treated?",
        "Patient on insulin, sweating.",
        "Give glucose and recheck in 15 minutes.",
    ),
    ("アスピリンの主な副作用は?", "", "消化管出血です。"),
    ("What does eGFR measure?", "", "Kidney filtration."),
]


def _write_recipe(folder: Path, base: Path, **sections: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as fh:
        for i in range(48):
            ins, inp, out = RECORDS[i % len(RECORDS)]
            fh.write(
                json.dumps(
                    {"instruction": ins, "input": inp, "output": out * (1 + i % 3)}, ensure_ascii=False
                )
                + "\n"
            )
    recipe = {
        "model": {"path": str(base)},
        "data": {"files": ["data.jsonl"], "template": "medpalm"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 20, "lr": 1e-2, "schedule": "constant", "batch_size": 4, "max_length": 128},
        "output": {"checkpoint_every": 10},
        "bench": {"benchmarks": ["jmed-sample"]},  # another stage's section: ignored by training
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


PROBE = "患者は65歳の男性で、高血圧の既往がある。Aspirin 100 mg."


class CaptureLogits:
    """A TrainerCallback that keeps the trained model's logits on a probe at the end of training."""

    def __init__(self, tokenizer):
        self.batch = tokenizer(PROBE, return_tensors="pt")
        self.logits = None

    def __getattr__(self, name):  # every other TrainerCallback event: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import torch

        model.eval()
        with torch.no_grad():
            self.logits = model(**self.batch).logits.clone()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama):
    """One 20-step LoRA run on the tiny Llama (shared by the tests below)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("train")
    recipe = _write_recipe(folder, tiny_llama)
    capture = CaptureLogits(AutoTokenizer.from_pretrained(tiny_llama))
    adapter = run_training(recipe, out=folder / "adapter", progress=False, callbacks=[capture])
    return recipe, adapter, capture


def test_twenty_steps_lower_the_loss(trained):
    _, adapter, _ = trained
    losses = [e["loss"] for e in json.loads((adapter / "training_log.json").read_text()) if "loss" in e]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_adapter_manifest_records_parent_recipe_data_and_fingerprint(trained, tiny_llama):
    recipe_path, adapter, _ = trained
    manifest = read_manifest(adapter)
    assert (manifest.kind, manifest.format) == ("adapter", "peft-adapter")
    assert manifest.parent == parent_record(tiny_llama)
    assert manifest.license == "apache-2.0"  # inherited from the base's manifest
    assert manifest.config["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert manifest.config["data"]["files"][0]["path"] == str(recipe_path.parent / "data.jsonl")
    assert list(manifest.details["data"]) == [str(recipe_path.parent / "data.jsonl")]
    recipe = load_recipe(recipe_path)
    assert manifest.details["fingerprint"] == recipe_fingerprint(recipe)
    assert manifest.details["complete"] and manifest.details["steps"] == 20
    assert manifest.details["tokens_per_second"] > 0
    assert adapter_matches(adapter, recipe)
    assert not adapter_matches(adapter, load_recipe(recipe_path, ["lora.r=4"]))
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"):
        assert (adapter / name).is_file()
    assert "q_proj, v_proj" in (adapter / "README.md").read_text()


def test_adapter_save_load_round_trip_gives_identical_logits(trained, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, adapter, capture = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    batch = AutoTokenizer.from_pretrained(tiny_llama)(PROBE, return_tensors="pt")
    with torch.no_grad():
        base_logits = base(**batch).logits.clone()
        logits = PeftModel.from_pretrained(base, adapter).eval()(**batch).logits
    assert torch.equal(logits, capture.logits)
    assert (logits - base_logits).abs().max() > 0.1  # the adapter learned something


def test_resume_continues_at_the_same_step_with_the_same_data(tmp_path, tiny_llama):
    settings = {"train": {"max_steps": 6, "lr": 5e-3}, "lora": {"dropout": 0.1},
                "output": {"checkpoint_every": 3, "keep_checkpoints": 2}}  # fmt: skip
    recipe = _write_recipe(tmp_path, tiny_llama, **settings)
    reference = run_training(recipe, out=tmp_path / "reference", progress=False)

    class StopAtStep4(CaptureLogits):
        def __init__(self):
            pass

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted) as stop:
        run_training(recipe, out=out, progress=False, callbacks=[StopAtStep4()])
    assert stop.value.step == 4
    partial = read_manifest(out)  # Ctrl-C saved the adapter so far
    assert not partial.details["complete"] and partial.details["steps"] == 4
    assert (checkpoints_dir(out) / "checkpoint-4").is_dir() and last_checkpoint(out).name == "checkpoint-4"
    assert not adapter_matches(out, load_recipe(recipe))

    with pytest.raises(ArtifactError, match="--resume"):
        run_training(recipe, out=out, progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(train\.lr\)"):
        run_training(recipe, out=out, overrides=["train.lr=0.1"], resume=True, progress=False)

    run_training(recipe, out=out, resume=True, progress=False)
    manifest = read_manifest(out)
    assert manifest.details["complete"] and manifest.details["steps"] == 6

    def losses(folder):
        return {
            e["step"]: e["loss"]
            for e in json.loads((folder / "training_log.json").read_text())
            if "loss" in e
        }

    resumed, full = losses(out), losses(reference)
    assert set(resumed) >= {5, 6}
    for step in (5, 6):
        # Same process, same kernels, same data order: resuming must not change the arithmetic
        # beyond fp32 rounding of the restored optimizer state.
        assert resumed[step] == pytest.approx(full[step], abs=1e-5)


def test_existing_output_needs_force(trained):
    recipe, adapter, _ = trained
    with pytest.raises(ArtifactError, match="already exists; pass --force"):
        run_training(recipe, out=adapter, progress=False)


def test_missing_base_fails_before_writing(tmp_path):
    recipe = _write_recipe(tmp_path, tmp_path / "no-such-model")
    with pytest.raises(ModelError, match=r"no-such-model not found; set model\.path"):
        run_training(recipe, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not checkpoints_dir(tmp_path / "out").exists()


def test_target_modules_the_model_lacks_lists_what_it_has(tmp_path, tiny_qwen2):
    recipe = _write_recipe(tmp_path, tiny_qwen2, lora={"target_modules": ["q_proj", "query_key_value"]})
    with pytest.raises(ConfigError) as err:
        run_training(recipe, out=tmp_path / "out", progress=False)
    message = str(err.value)
    assert "has no query_key_value" in message
    assert "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in message
    assert not (tmp_path / "out").exists() and not checkpoints_dir(tmp_path / "out").exists()


def test_qwen2_chat_template_and_eval_split(tmp_path, tiny_qwen2):
    recipe = _write_recipe(
        tmp_path, tiny_qwen2,
        data={"template": "chat", "eval_split": 0.25, "system": "You are a clinician."},
        train={"max_steps": 4, "max_length": 256},
    )  # fmt: skip
    adapter = run_training(recipe, out=tmp_path / "adapter", progress=False)
    details = read_manifest(adapter).details
    assert details["examples"]["eval"] == 12 and details["examples"]["train"] == 36
    assert details["eval_loss"] > 0 and details["base"]["model_type"] == "qwen2"


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory, tiny_llama) -> Path:
    """A tiny random Mistral (sliding-window attention) sharing the tiny Llama's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig

    out = tmp_path_factory.mktemp("models") / "tiny-mistral"
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, sliding_window=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_mistral_family_trains_and_merges(tmp_path, tiny_mistral):
    from jmed_edge.merge import merge_adapter

    recipe = _write_recipe(tmp_path, tiny_mistral, train={"max_steps": 3})
    adapter = run_training(recipe, out=tmp_path / "adapter", progress=False)
    details = read_manifest(adapter).details
    assert details["base"]["model_type"] == "mistral" and details["complete"]
    assert read_manifest(adapter).license == "unknown"  # a base without a manifest declares none
    merged = merge_adapter(adapter, tmp_path / "merged")
    assert read_manifest(merged).verification["passed"]


def test_qlora_nf4_trains_on_cpu(tmp_path, tiny_llama):
    recipe = _write_recipe(tmp_path, tiny_llama, model={"quantization": "nf4"},
                           lora={"target_modules": "all-linear"}, train={"max_steps": 4})  # fmt: skip
    adapter = run_training(recipe, out=tmp_path / "adapter", progress=False)
    manifest = read_manifest(adapter)
    assert manifest.details["quantization"] == "nf4" and manifest.details["complete"]
    assert manifest.details["target_modules"] == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    losses = [e["loss"] for e in json.loads((adapter / "training_log.json").read_text()) if "loss" in e]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)


def test_cli_trains_and_reports(tmp_path, tiny_llama, run_cli):
    recipe = _write_recipe(tmp_path, tiny_llama, train={"max_steps": 2})
    code, out, err = run_cli("train", recipe, "--out", tmp_path / "a", "--set", "lora.r=4", "--quiet")
    assert code == 0, err
    assert "adapter written to" in out and "2 steps" in out
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["r"] == 4


def test_cli_bad_recipe_key_is_one_line_with_suggestion(tmp_path, tiny_llama, run_cli):
    recipe = _write_recipe(tmp_path, tiny_llama)
    code, _, err = run_cli(
        "train", recipe, "--set", "lora.rank=4", "--set", "train.learning_rate=1", "--out", tmp_path / "x"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'lora.rank: unknown key (did you mean "r"?)' in err and 'did you mean "lr"' in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(tmp_path, tiny_llama):
    """The shipped DDP config on 2 CPU processes (gloo): one complete adapter, data split between them."""
    from jmed_edge.resources import shipped

    recipe = _write_recipe(tmp_path, tiny_llama, train={"max_steps": 4, "batch_size": 2})
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(shipped("recipes/accelerate/ddp.yaml")),
           "--num_processes", "2", "-m", "jmed_edge", "train", str(recipe), "--out", str(out), "--quiet"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.details["complete"] and manifest.details["steps"] == 4
    # two processes of batch 2 see 4 examples per step, like one process of batch 4
    assert manifest.details["epochs"] == pytest.approx(4 * 4 / 48, abs=0.01)


@pytest.mark.gpu
@pytest.mark.skipif(not shutil.which("nvidia-smi"), reason="needs a CUDA GPU")
def test_qlora_on_gpu(tmp_path, tiny_llama):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    recipe = _write_recipe(tmp_path, tiny_llama, model={"quantization": "nf4"}, train={"max_steps": 4})
    adapter = run_training(recipe, out=tmp_path / "adapter", progress=False)
    details = read_manifest(adapter).details
    assert details["device"] == "cuda" and details["precision"] in ("bf16", "fp16") and details["complete"]

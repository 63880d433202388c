"""The streaming merge: the same weights as peft's merge_and_unload, shard by shard, and clear
failures for a broken checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jmed_edge.errors import ModelError
from jmed_edge.manifest import read_manifest
from jmed_edge.merge import merge_adapter


def _resave(src: Path, out: Path, dtype: str = "float32", shard: str = "60KB") -> Path:
    """``src`` saved again in ``dtype`` as several shards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype))
    model.save_pretrained(out, max_shard_size=shard)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def _adapter(base: Path, out: Path, **lora: object) -> Path:
    """A LoRA adapter with random A and B (a trained one's B is nonzero too) on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    settings = {"r": 4, "lora_alpha": 16, "target_modules": "all-linear", "init_lora_weights": False} | lora
    peft_model = get_peft_model(model, LoraConfig(**settings))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)  # keep the update a perturbation, as training leaves it
    peft_model.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def _peft_merged(base: Path, adapter: Path, dtype: str) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload(safe_merge=True)
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _written(folder: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(path)
    return tensors


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_streamed_merge_equals_peft_bit_for_bit_across_shards(tiny_llama, tmp_path, dtype):
    import torch

    base = _resave(tiny_llama, tmp_path / "base", dtype)
    assert len(list(base.glob("*.safetensors"))) >= 3
    adapter = _adapter(base, tmp_path / "adapter")
    out = merge_adapter(adapter, tmp_path / "merged", base=base)
    manifest = read_manifest(out)
    assert manifest.details["streamed"] and manifest.verification["passed"]
    assert manifest.config["dtype"] == {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    assert "module by module" in manifest.verification["method"]
    expected, got = _peft_merged(base, adapter, dtype), _written(out)
    assert set(got) == set(expected)
    differ = [
        k for k in expected if got[k].dtype != getattr(torch, dtype) or not torch.equal(got[k], expected[k])
    ]
    assert not differ, differ[:3]
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype


def test_tied_embeddings_are_written_once_and_merge_like_peft(tiny_qwen2, tmp_path):
    import torch

    adapter = _adapter(tiny_qwen2, tmp_path / "adapter")
    out = merge_adapter(adapter, tmp_path / "merged", base=tiny_qwen2)
    assert read_manifest(out).details["streamed"]
    got, expected = _written(out), _peft_merged(tiny_qwen2, adapter, "float32")
    assert (
        "lm_head.weight" not in got and json.loads((out / "config.json").read_text())["tie_word_embeddings"]
    )
    assert all(torch.equal(got[k], expected[k]) for k in got)

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()


def test_missing_shard_is_named_in_one_line(tiny_llama, tmp_path):
    base = _resave(tiny_llama, tmp_path / "base")
    adapter = _adapter(base, tmp_path / "adapter")
    index = json.loads((base / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[1]
    (base / gone).unlink()
    with pytest.raises(ModelError) as info:
        merge_adapter(adapter, tmp_path / "merged", base=base)
    message = str(info.value)
    assert gone in message and "missing shard" in message and "\n" not in message
    assert not (tmp_path / "merged").exists()


def test_a_dora_adapter_is_merged_by_peft_and_says_why(tiny_llama, tmp_path):
    adapter = _adapter(tiny_llama, tmp_path / "adapter", use_dora=True)
    out = merge_adapter(adapter, tmp_path / "merged", base=tiny_llama)
    manifest = read_manifest(out)
    assert not manifest.details["streamed"] and "DoRA" in manifest.details["in_memory_reason"]
    assert manifest.verification["passed"]


def test_a_broken_streamed_merge_fails_its_check(tiny_llama, tmp_path, monkeypatch):
    import jmed_edge.merge.stream as stream
    from jmed_edge.errors import VerificationError

    adapter = _adapter(tiny_llama, tmp_path / "adapter")
    real = stream.fold_delta
    monkeypatch.setattr(stream, "fold_delta", lambda w, d: real(w, d) * 1.5)
    with pytest.raises(VerificationError, match="does not reproduce base \\+ adapter"):
        merge_adapter(adapter, tmp_path / "bad", base=tiny_llama)
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))


def test_a_ram_budget_too_small_is_refused_before_starting_with_the_figure(tiny_llama, tmp_path, monkeypatch):
    from jmed_edge.errors import DependencyError

    adapter = _adapter(tiny_llama, tmp_path / "adapter")
    monkeypatch.setenv("JMED_EDGE_RAM_BUDGET", "100MB")
    with pytest.raises(DependencyError) as info:
        merge_adapter(adapter, tmp_path / "merged", base=tiny_llama)
    message = str(info.value)
    assert "needs about" in message and "100.0 MB is JMED_EDGE_RAM_BUDGET=100MB" in message
    assert not (tmp_path / "merged").exists()


def test_a_disk_that_fills_while_writing_names_the_space_needed_and_leaves_nothing(
    tiny_llama, tmp_path, monkeypatch
):
    import errno

    import torch

    import jmed_edge.merge.tensorfiles as tensorfiles
    from jmed_edge.errors import DiskSpaceError

    adapter = _adapter(tiny_llama, tmp_path / "adapter")
    written = []

    def full(self, tensor):
        written.append(1)
        if len(written) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._fh.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))

    monkeypatch.setattr(tensorfiles.ShardWriter, "_write_bytes", full)
    with pytest.raises(DiskSpaceError) as info:
        merge_adapter(adapter, tmp_path / "out" / "merged", base=tiny_llama)
    message = str(info.value)
    assert "disk full while writing the merged model" in message and "needs about" in message
    assert "\n" not in message
    assert not list((tmp_path / "out").iterdir())  # no partial folder or file left

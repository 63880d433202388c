"""GGUF names: ``<model>-<TYPE>.gguf`` and the ``general.*`` keys, from the name alone (no conversion)."""

from __future__ import annotations

import pytest

from jmed_edge.convert.naming import check_name, file_stem, metadata_overrides, model_name
from jmed_edge.errors import ConfigError


def test_a_name_splits_like_llama_cpp_s_converter() -> None:
    m = model_name("SmolLM2-135M-Instruct-merged")
    assert (m.basename, m.size_label, m.finetune) == ("SmolLM2", "135M", "Instruct-merged")
    assert m.file_name("q4_k_m") == "SmolLM2-135M-Instruct-merged-Q4_K_M.gguf"
    m = model_name("Llama-3-ELYZA-JP-8B")
    assert (m.basename, m.size_label, m.finetune) == ("Llama-3-ELYZA-JP", "8B", None)
    m = model_name("tiny-llama")
    assert (m.basename, m.size_label, m.finetune) == ("tiny-llama", None, None)
    assert model_name("Mixtral-8x7b-v0.1").size_label == "8x7B"


def test_metadata_keys_the_converter_writes() -> None:
    keys = metadata_overrides(model_name("SmolLM2-135M-Instruct"), "apache-2.0")
    assert keys == {
        "general.name": "SmolLM2-135M-Instruct",
        "general.basename": "SmolLM2",
        "general.size_label": "135M",
        "general.finetune": "Instruct",
        "general.license": "apache-2.0",
        "general.quantized_by": "jmed-edge",
    }
    # no size in the name: llama.cpp counts the parameters; an unknown license is not written
    keys = metadata_overrides(model_name("tiny-llama"), "unknown")
    assert "general.size_label" not in keys and "general.license" not in keys


def test_japanese_name_stays_in_metadata_and_the_file_name_says_which_model() -> None:
    m = model_name("医療モデル-7B", fallback="SmolLM2-135M-Instruct-merged")
    assert m.name == "医療モデル-7B" and m.basename == "医療モデル" and m.size_label == "7B"
    assert m.file_name("Q4_K_M") == "SmolLM2-135M-Instruct-merged-7B-Q4_K_M.gguf"
    assert metadata_overrides(m, None)["general.name"] == "医療モデル-7B"
    assert model_name("医療モデル", fallback="日本語フォルダ").stem == "model"
    # full-width letters and digits are ASCII after NFKC: kept, not dropped
    assert model_name("ＭｅｄＬＬＭ-７Ｂ").file_name("q8_0") == "MedLLM-7B-Q8_0.gguf"
    assert file_stem("my model (v2)") == "my-model-v2"


@pytest.mark.parametrize(
    "bad,message",
    [
        ("runs/llama", "contains a path separator"),
        ("..\\evil", "contains a path separator"),
        ("  ", "is empty"),
        ("..", "is not a usable model name"),
        ("a\nb", "is not a usable model name"),
        ("x" * 200, "characters long"),
    ],
)
def test_names_that_cannot_be_file_names_are_refused(bad: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_name(bad)


def test_refused_name_is_one_line_on_the_command_line(run_cli, tmp_path, tiny_llama) -> None:
    code, _, err = run_cli("convert", tiny_llama, "--name", "a/b", "--out", tmp_path / "o")
    assert code == 2 and '--name "a/b" contains a path separator' in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()

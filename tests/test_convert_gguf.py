"""Tiny Llama and Qwen2 models -> F16, Q8_0, Q4_K_M GGUFs, verified; then ``jmed-edge verify`` on them.

Each model is converted once per module (~1 min each on 2 cores).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jmed_edge.convert.gguf import gguf_fingerprint, up_to_date
from jmed_edge.convert.llamacpp_tools import tools_status
from jmed_edge.convert.quant_types import quant_type
from jmed_edge.manifest import read_manifest
from jmed_edge.testing.numerics import F16_VS_FP32_KL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"),
]
TYPES = ("F16", "Q8_0", "Q4_K_M")


def _convert(src: Path, out: Path) -> dict[str, Path]:
    from jmed_edge.convert.gguf import convert_to_gguf

    return convert_to_gguf(src, out, quants=("q8_0", "q4_k_m"))


@pytest.fixture(scope="module")
def llama_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _convert(tiny_llama, tmp_path_factory.mktemp("gguf") / "llama")


@pytest.fixture(scope="module")
def qwen_gguf(tiny_qwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _convert(tiny_qwen2, tmp_path_factory.mktemp("gguf") / "qwen2")


@pytest.mark.parametrize("which,model", [("llama_gguf", "tiny-llama"), ("qwen_gguf", "tiny-qwen2")])
def test_each_type_is_a_verified_artifact(which: str, model: str, request: pytest.FixtureRequest) -> None:
    folders = request.getfixturevalue(which)
    assert list(folders) == list(TYPES)
    out = folders["F16"].parent
    # no staging leftovers; the importance matrix Q4_K_M was made with (auto is the default)
    assert sorted(p.name for p in out.iterdir()) == sorted([*TYPES, "imatrix-medical-ja-en.gguf"])
    for name, folder in folders.items():
        manifest = read_manifest(folder)
        assert manifest.kind == "gguf" and manifest.format == "gguf"
        # <model>-<TYPE>.gguf, the model named by the source's manifest
        file = f"{model}-{name}.gguf"
        assert (folder / file).is_file() and manifest.details["file"] == file
        assert manifest.name == f"{model}-{name}" and manifest.details["model_name"] == model
        assert manifest.details["quant"] == name and manifest.details["size_bytes"] > 0
        assert manifest.verification["passed"] is True
        checks = {c["name"]: c for c in manifest.verification["checks"]}
        assert checks["tokenizer parity"]["passed"] and checks["chat template"]["passed"]
        assert checks["tokenizer parity"]["matching"] == checks["tokenizer parity"]["probes"] >= 20


@pytest.mark.parametrize("which,pre", [("llama_gguf", "llama-bpe"), ("qwen_gguf", "qwen2")])
def test_f16_matches_the_source_and_records_its_pre_tokenizer(which: str, pre: str, request) -> None:
    folders = request.getfixturevalue(which)
    manifest = read_manifest(folders["F16"])
    assert manifest.details["pre_tokenizer"] == pre
    assert manifest.details["pre_tokenizer_source"] == "source manifest"
    src = Path(manifest.details["source"])
    assert manifest.parent["path"] == str(src) and manifest.parent["kind"] == "model"
    logits = next(c for c in manifest.verification["checks"] if c["name"] == "logit parity")
    assert logits["passed"] and logits["kl_mean"] < F16_VS_FP32_KL and logits["max_abs_diff"] < logits["atol"]


@pytest.mark.parametrize("quant", TYPES)
def test_general_metadata_reads_like_llama_cpp_s_own(llama_gguf: dict[str, Path], quant: str) -> None:
    # read back with gguf-py's reader, the way the Hugging Face GGUF viewer and llama.cpp read it
    from gguf import GGUFReader

    reader = GGUFReader(next(llama_gguf[quant].glob("*.gguf")))

    def value(key: str):
        field = reader.get_field(key)
        return None if field is None else field.contents()

    assert value("general.name") == "tiny-llama" and value("general.basename") == "tiny-llama"
    assert value("general.license") == "apache-2.0" and value("general.quantized_by") == "jmed-edge"
    size_label = value("general.size_label")  # counted by llama.cpp: the name carries no size
    assert isinstance(size_label, str) and size_label[-1] in "KMB" and size_label[0].isdigit()
    if quant != "F16":  # the quantizer copies general.* from the F16
        assert value("general.file_type") == quant_type(quant).ftype


def test_a_japanese_name_is_kept_in_metadata(tiny_llama: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader

    from jmed_edge.convert.gguf import convert_to_gguf

    done = convert_to_gguf(tiny_llama, tmp_path / "ja", quants="q8_0", name="医療モデル-7B", verify=False)
    assert sorted(p.name for p in done["Q8_0"].glob("*.gguf")) == ["tiny-llama-7B-Q8_0.gguf"]
    reader = GGUFReader(done["Q8_0"] / "tiny-llama-7B-Q8_0.gguf")
    assert reader.get_field("general.name").contents() == "医療モデル-7B"
    assert reader.get_field("general.basename").contents() == "医療モデル"
    assert reader.get_field("general.size_label").contents() == "7B"
    assert read_manifest(done["Q8_0"]).name == "医療モデル-7B-Q8_0"


@pytest.mark.parametrize("which,family", [("llama_gguf", "llama3"), ("qwen_gguf", "chatml")])
def test_a_modelfile_beside_each_gguf_renders_like_its_chat_template(
    which: str, family: str, request
) -> None:
    from test_convert_modelfile import EXTRA, ollama_render, parse_modelfile

    from jmed_edge.convert.ggufinfo import KEY_ADD_BOS, read_gguf
    from jmed_edge.convert.modelfile import PROBES, render_jinja, source_tokens

    for folder in request.getfixturevalue(which).values():
        manifest = read_manifest(folder)
        text = (folder / "Modelfile").read_text(encoding="utf-8")
        assert parse_modelfile(text)[0] == ("FROM", f"./{manifest.details['file']}")
        assert manifest.details["modelfile"]["template"] == family and "Modelfile" in manifest.files
        info = read_gguf(folder / manifest.details["file"])
        bos, eos = source_tokens(Path(manifest.details["source"]))
        for messages in [*map(list, PROBES), EXTRA]:
            want = render_jinja(info.get("tokenizer.chat_template"), messages, bos, eos)
            if info.get(KEY_ADD_BOS) and bos:
                want = want.removeprefix(bos)  # llama.cpp adds it when it tokenizes the prompt
            assert ollama_render(text, messages) == want


def test_folders_with_the_old_file_names_are_still_found(llama_gguf: dict[str, Path], tmp_path: Path) -> None:
    from jmed_edge.artifacts import describe

    old = tmp_path / "Q8_0"
    shutil.copytree(llama_gguf["Q8_0"], old)
    (old / "tiny-llama-Q8_0.gguf").rename(old / "model-Q8_0.gguf")
    info = describe(old)
    assert info.format == "gguf" and info.model_file == old / "model-Q8_0.gguf"


def test_quantized_types_record_bilingual_kl_against_f16(llama_gguf: dict[str, Path]) -> None:
    f16 = read_manifest(llama_gguf["F16"])
    kl = {}
    for name in ("Q8_0", "Q4_K_M"):
        manifest = read_manifest(llama_gguf[name])
        assert (
            manifest.parent["path"] == str(llama_gguf["F16"].resolve())
            and manifest.parent["sha256"] == f16.sha256
        )
        check = next(c for c in manifest.verification["checks"] if c["name"].startswith("quantization loss"))
        assert check["passed"] is None  # measured, never failing
        for lang in ("ja", "en"):
            stats = check["kl"][lang]
            assert stats["positions"] >= 200 and 0 <= stats["kl_mean"] <= stats["kl_max"]
            assert 0 < stats["top1"] <= 1 and stats["ppl_candidate"] > 1
        kl[name] = check["kl"]["ja"]["kl_mean"]
    assert kl["Q8_0"] < kl["Q4_K_M"]  # fewer bits, more divergence


def test_fingerprints_identify_up_to_date_artifacts(llama_gguf: dict[str, Path]) -> None:
    f16 = read_manifest(llama_gguf["F16"])
    q4 = read_manifest(llama_gguf["Q4_K_M"])
    assert q4.config["imatrix"] == "auto"
    key = f"auto:{q4.details['imatrix']['calibration']['sha256']}"
    expected = gguf_fingerprint(f16.sha256, "Q4_K_M", key, "f16", pre_tokenizer="llama-bpe")
    assert q4.details["fingerprint"] == expected and up_to_date(llama_gguf["Q4_K_M"], expected)
    assert not up_to_date(llama_gguf["Q4_K_M"], gguf_fingerprint(f16.sha256, "Q4_K_M", "x", "f16"))


def test_verify_cli_prints_each_check(run_cli, llama_gguf: dict[str, Path]) -> None:
    code, out, err = run_cli("verify", llama_gguf["F16"], "--no-record")
    assert code == 0, err
    assert "✓ tokenizer parity: 24/24" in out and "✓ chat template" in out and "✓ logit parity" in out


def test_verify_cli_on_a_folder_checks_every_artifact(run_cli, qwen_gguf: dict[str, Path]) -> None:
    code, out, err = run_cli("verify", qwen_gguf["F16"].parent, "--no-record")
    assert code == 0, err
    assert out.count("✓ tokenizer parity") == 3 and out.count("quantization loss vs") == 2


def test_refuses_to_overwrite_without_force(run_cli, tiny_llama: Path, llama_gguf: dict[str, Path]) -> None:
    out = llama_gguf["F16"].parent
    code, _, err = run_cli("convert", tiny_llama, "--to", "gguf", "--quant", "q8_0", "--out", out)
    assert code == 2 and "already exist" in err and "--force" in err


def test_truncated_gguf_given_to_verify(run_cli, tmp_path: Path, llama_gguf: dict[str, Path]) -> None:
    cut = tmp_path / "cut.gguf"
    data = (llama_gguf["Q4_K_M"] / "tiny-llama-Q4_K_M.gguf").read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run_cli("verify", cut, "--against", read_manifest(llama_gguf["F16"]).details["source"])
    assert code == 2 and "truncated" in err and "re-convert it" in err and "Traceback" not in err


def test_corrupt_gguf_given_to_verify(run_cli, tmp_path: Path, tiny_llama: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
    code, _, err = run_cli("verify", bad, "--against", tiny_llama)
    assert code == 2 and "bad.gguf is truncated or corrupt" in err and "re-convert it" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    bad.write_bytes(b"not a gguf at all")
    code, _, err = run_cli("verify", bad, "--against", tiny_llama)
    assert code == 2 and "not a GGUF file" in err


def test_changed_artifact_file_is_caught_by_its_manifest(
    run_cli, tmp_path: Path, llama_gguf: dict[str, Path]
) -> None:
    copy = tmp_path / "Q8_0"
    shutil.copytree(llama_gguf["Q8_0"], copy)
    gguf = copy / "tiny-llama-Q8_0.gguf"
    gguf.write_bytes(gguf.read_bytes()[:-100])
    code, _, err = run_cli("verify", copy)
    assert code == 2 and "tiny-llama-Q8_0.gguf has" in err and "manifest says" in err


def test_source_tokenizer_edited_after_conversion_fails_parity(
    run_cli, tmp_path: Path, tiny_llama: Path, llama_gguf: dict[str, Path]
) -> None:
    import json

    src = tmp_path / "edited"
    shutil.copytree(tiny_llama, src)
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    merges = tokenizer["model"]["merges"]
    tokenizer["model"]["merges"] = merges[len(merges) // 2 :]  # the first half of the merges is lost
    (src / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    code, out, err = run_cli("verify", llama_gguf["F16"], "--against", src, "--no-record")
    assert code == 2
    assert "✗ tokenizer parity" in out and "failed verification" in err
    assert "HF " in out and "llama.cpp" in out

"""Fast checks of convert's tables, presets, imatrix reader and input validation (no conversion runs)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from jmed_edge.convert import probes
from jmed_edge.convert.gguf import convert_to_gguf, gguf_fingerprint
from jmed_edge.convert.imatrix import choose_chunk, load_imatrix
from jmed_edge.convert.llamacpp_tools import tools_status
from jmed_edge.convert.presets import load_preset, shipped_presets
from jmed_edge.convert.quant_types import QUANT_TYPES, parse_quants, quant_type
from jmed_edge.errors import ArtifactError, ConfigError, DataError, DiskSpaceError, ModelError

needs_tools = pytest.mark.skipif(
    not tools_status()[0], reason="llama.cpp converter not set up (jmed-edge setup)"
)


def test_llama_cpp_tools_are_set_up() -> None:
    # The conversion tests skip without the tools; this one fails, so a setup that did not build
    # them cannot pass as a green run.
    ready, line = tools_status()
    assert ready, f"{line}: run `jmed-edge setup` (`make setup` does)"


# --- quant types and presets ---------------------------------------------------------------------


def test_quant_list_accepts_any_case_and_llama_cpp_aliases() -> None:
    assert [q.name for q in parse_quants("q8_0, Q4_K_M,q4_k,iq4_xs")] == ["Q8_0", "Q4_K_M", "IQ4_XS"]
    assert quant_type("q4_k_m").ftype == 15 and quant_type("IQ2_XS").imatrix == "required"


def test_unknown_quant_suggests_the_closest() -> None:
    with pytest.raises(
        ConfigError, match=r'unknown quant type "Q4_KM" \(did you mean "q4_k_m"\?\); known: f32'
    ):
        quant_type("Q4_KM")


def test_ftype_ids_match_the_bindings() -> None:
    import llama_cpp

    for q in QUANT_TYPES.values():
        name = "LLAMA_FTYPE_ALL_F32" if q.name == "F32" else f"LLAMA_FTYPE_MOSTLY_{q.name}"
        assert getattr(llama_cpp, name) == q.ftype, q.name


def test_every_type_whose_quantizer_takes_an_imatrix_uses_one() -> None:
    # K-quants, IQ types and the legacy 4/5-bit types weigh their rounding error by an imatrix
    # (ggml-quants.c); Q8_0's quantizer ignores one, the float types are not quantized.
    takers = {q.name for q in QUANT_TYPES.values() if q.uses_imatrix}
    assert {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS"} <= takers
    assert {"Q8_0", "F16", "BF16", "F32"}.isdisjoint(takers)


def test_imatrix_auto_is_the_default_and_none_opts_out() -> None:
    from jmed_edge.convert.gguf import imatrix_mode_for, imatrix_setting

    q4_0, q8_0 = quant_type("q4_0"), quant_type("q8_0")
    assert imatrix_setting(None) == "auto" and imatrix_setting("none") == "none"
    assert imatrix_setting("~/im.gguf") == Path("~/im.gguf").expanduser()
    assert imatrix_mode_for(None, q4_0) == "auto" and imatrix_mode_for("auto", q4_0) == "auto"
    assert imatrix_mode_for("none", q4_0) is None and imatrix_mode_for("x.dat", q4_0) == "file"
    assert imatrix_mode_for(None, q8_0) is None
    from jmed_edge.pipeline.recipe import GgufSection

    assert GgufSection().imatrix == "auto"


def test_every_shipped_preset_loads() -> None:
    presets = shipped_presets()
    assert {"cpu-8gb", "cpu-16gb", "gpu-8gb", "gpu-16gb"} <= set(presets)
    for name in presets:
        preset = load_preset(name)
        assert preset.quants and preset.memory_bytes > 0
        needs = [q for q in preset.quants if QUANT_TYPES[q].imatrix == "required"]
        assert not needs or preset.imatrix == "auto", f"{name} lists {needs} without an imatrix"


def test_preset_problems_are_reported_together(tmp_path: Path) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: x\ndescription: y\ndevice: tpu\nmemory: 8GB\nquants: [q4_km]\n")
    with pytest.raises(ConfigError) as err:
        load_preset(bad)
    assert "device" in str(err.value) and 'did you mean "q4_k_m"' in str(err.value)
    with pytest.raises(ConfigError, match=r'unknown preset "cpu-8g".*did you mean "cpu-8gb"'):
        load_preset("cpu-8g")


def test_cli_lists_presets_and_quants(run_cli) -> None:
    code, out, _ = run_cli("convert", "--list-presets")
    assert code == 0 and "cpu-8gb" in out and "gpu-16gb" in out
    code, out, _ = run_cli("convert", "--list-quants")
    assert code == 0 and "q4_k_m" in out and "iq2_xs" in out
    assert "ONNX precisions" in out and "int4" in out and "fp32" in out


def test_convert_help_describes_every_target(run_cli) -> None:
    code, out, _ = run_cli("convert", "--help")
    assert code == 0
    description = out.split("\n\n")[1]  # the paragraph under the usage line
    assert "GGUF" in description and "ONNX" in description and "LoRA" in description
    for target in ("gguf", "gguf-lora", "onnx"):
        assert f"\n  {target} " in out
    assert "--onnx-precision" in out and "alias of --quant" in " ".join(out.split())


def test_quant_flag_takes_onnx_precisions(tmp_path: Path) -> None:
    import argparse

    from jmed_edge.convert.onnx.cli import request_from_args

    def request(**kw) -> dict:
        base = {"quant": None, "onnx_precision": None, "onnx_preset": None, "onnx_option": [],
                "onnx_target": None, "onnx_exporter": "genai-builder"}  # fmt: skip
        return request_from_args(argparse.Namespace(**{**base, **kw}))

    assert request(quant="INT8, int4")["precisions"] == "int8,int4"
    assert request(onnx_precision="int4")["precisions"] == "int4"  # the alias
    assert request(quant="int4", onnx_precision="int4")["precisions"] == "int4"
    assert request()["precisions"] == "fp32,int8,int4"
    with pytest.raises(ConfigError, match="--quant int4 and --onnx-precision int8 disagree"):
        request(quant="int4", onnx_precision="int8")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--to", "onnx", "--quant", "q4_k_m,int4"], "q4_k_m is a GGUF type (--to gguf); --to onnx takes"),
        (["--to", "gguf", "--quant", "q8_0,int4"], "int4 is an ONNX precision; use --to onnx --quant int4"),
        (["--to", "gguf", "--onnx-precision", "int4"], "--onnx-precision int4 applies to --to onnx"),
        (["--to", "onnx", "--name", "med-7B"], "--name applies to --to gguf"),
    ],
)
def test_a_type_for_the_other_format_is_one_clear_line(run_cli, tmp_path: Path, args, message) -> None:
    code, _, err = run_cli("convert", tmp_path / "src", *args, "--out", tmp_path / "o")
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --- importance matrix files ---------------------------------------------------------------------


def _write_gguf_imatrix(path: Path, sums: np.ndarray, counts: np.ndarray) -> None:
    import gguf

    writer = gguf.GGUFWriter(path, arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", ["calib.txt"])
    writer.add_uint32("imatrix.chunk_count", 3)
    writer.add_uint32("imatrix.chunk_size", 512)
    writer.add_tensor("blk.0.attn_q.weight.in_sum2", sums)
    writer.add_tensor("blk.0.attn_q.weight.counts", counts)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_imatrix_is_normalised_like_llama_cpp(tmp_path: Path) -> None:
    # two experts of 4 columns; the second expert saw no tokens -> llama.cpp uses 1.0
    sums = np.array([[2, 4, 6, 8], [5, 5, 5, 5]], dtype=np.float32)
    counts = np.array([2, 0], dtype=np.float32)
    _write_gguf_imatrix(tmp_path / "im.gguf", sums, counts)
    data = load_imatrix(tmp_path / "im.gguf")
    assert data.chunk_count == 3 and data.chunk_size == 512 and data.datasets == ["calib.txt"]
    np.testing.assert_allclose(data.entries["blk.0.attn_q.weight"], [1, 2, 3, 4, 1, 1, 1, 1])


def test_legacy_dat_imatrix_divides_by_ncall(tmp_path: Path) -> None:
    name = b"blk.0.ffn_down.weight"
    raw = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 4, 3)
    raw += np.array([4, 8, 12], dtype="<f4").tobytes() + struct.pack("<i", 7) + struct.pack("<i", 3) + b"abc"
    (tmp_path / "im.dat").write_bytes(raw)
    data = load_imatrix(tmp_path / "im.dat")
    np.testing.assert_allclose(data.entries["blk.0.ffn_down.weight"], [1, 2, 3])
    assert data.legacy and data.chunk_count == 7 and data.datasets == ["abc"]


def test_not_an_imatrix_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.dat").write_bytes(b"\x00\x00")
    with pytest.raises(ConfigError, match="not a readable importance matrix"):
        load_imatrix(tmp_path / "x.dat")
    with pytest.raises(ConfigError, match=r"does not exist.*--imatrix auto"):
        load_imatrix(tmp_path / "missing.gguf")


def test_imatrix_chunk_leaves_two_chunks() -> None:
    assert choose_chunk(100_000, 4096) == 512
    assert choose_chunk(700, 4096) == 256
    assert choose_chunk(100_000, 256) == 256
    with pytest.raises(DataError, match="at least 128"):
        choose_chunk(100, 4096)


def test_calibration_split_is_bilingual_and_held_out() -> None:
    for lang in probes.CALIBRATION_LANGS:
        text = probes.calibration(lang)
        assert len(text.held_out) > 500 and len(text.fit) > 3 * len(text.held_out)
        assert text.held_out.strip().split("\n\n")[0] not in text.fit
    corpus, record = probes.calibration_corpus()
    assert record["languages"] == ["ja", "en"] and len(record["sha256"]) == 64
    assert "高血圧" in corpus and "Hypertension" in corpus


def test_fingerprint_changes_with_each_input() -> None:
    base = gguf_fingerprint("abc", "q4_k_m", None, "f16")
    assert base == gguf_fingerprint("abc", "Q4_K_M", None, "F16")
    variants = [
        gguf_fingerprint("abd", "q4_k_m", None, "f16"),
        gguf_fingerprint("abc", "q5_k_m", None, "f16"),
        gguf_fingerprint("abc", "q4_k_m", "1234", "f16"),
        gguf_fingerprint("abc", "q4_k_m", None, "bf16"),
        gguf_fingerprint("abc", "q4_k_m", None, "f16", converter="other"),
    ]
    assert len({base, *variants}) == 6


# --- bad input fails at once, leaving nothing -----------------------------------------------------


@needs_tools
def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="is not a model"):
        convert_to_gguf(tmp_path / "notes", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_tools
def test_unsupported_architecture_lists_supported(tmp_path: Path, tiny_llama: Path) -> None:
    src = tmp_path / "odd"
    shutil.copytree(tiny_llama, src)
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLMX"]
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as err:
        convert_to_gguf(src, tmp_path / "out")
    message = str(err.value)
    assert "LlamaForCausalLMX is not supported" in message and 'did you mean "LlamaForCausalLM"' in message
    assert "Qwen2ForCausalLM" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


@needs_tools
def test_truncated_safetensors(tmp_path: Path, tiny_llama: Path) -> None:
    src = tmp_path / "cut"
    shutil.copytree(tiny_llama, src)
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(
        ModelError, match=r"model.safetensors is truncated \(\d+ bytes, its header needs \d+\)"
    ):
        convert_to_gguf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_tools
def test_iq_types_need_an_imatrix(run_cli, tmp_path: Path, tiny_llama: Path) -> None:
    code, _, err = run_cli(
        "convert", tiny_llama, "--quant", "q4_k_m,iq2_xs", "--imatrix", "none", "--out", tmp_path / "out"
    )
    assert code == 2 and "IQ2_XS need an importance matrix; pass --imatrix auto" in " ".join(err.split())
    assert not (tmp_path / "out").exists()


@needs_tools
def test_float_type_asked_as_a_quant_is_refused_not_dropped(tmp_path: Path, tiny_llama: Path) -> None:
    with pytest.raises(ConfigError, match="BF16 is an unquantized type, made with --outtype bf16"):
        convert_to_gguf(tiny_llama, tmp_path / "out", quants="q8_0,bf16")
    assert not (tmp_path / "out").exists()


def test_imatrix_none_means_no_imatrix(tmp_path: Path, tiny_llama: Path) -> None:
    # Presets and recipes spell "no importance matrix" as none: it is not a file called "none".
    with pytest.raises(ConfigError, match="IQ2_XS need an importance matrix"):
        convert_to_gguf(tiny_llama, tmp_path / "out", quants="iq2_xs", imatrix="none")


@needs_tools
def test_unknown_quant_on_the_command_line(run_cli, tmp_path: Path, tiny_llama: Path) -> None:
    code, _, err = run_cli(
        "convert", tiny_llama, "--to", "gguf", "--quant", "q8_0,q4km", "--out", tmp_path / "o"
    )
    assert code == 2 and 'unknown quant type "q4km"' in err and "did you mean" in err
    assert not (tmp_path / "o").exists()


@needs_tools
def test_unknown_pre_tokenizer_name(tmp_path: Path, tiny_llama: Path) -> None:
    with pytest.raises(
        ConfigError, match='unknown pre-tokenizer "llama-bpf" \\(did you mean "llama-bpe"\\?\\)'
    ):
        convert_to_gguf(tiny_llama, tmp_path / "out", pre_tokenizer="llama-bpf")


@needs_tools
def test_no_disk_space(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_llama: Path) -> None:
    monkeypatch.setattr("jmed_edge.fsutil.free_bytes", lambda path: 1000)
    with pytest.raises(DiskSpaceError, match=r"needs about .* but only 1000 B is free"):
        convert_to_gguf(tiny_llama, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_tools
def test_existing_artifacts_need_force(tmp_path: Path, tiny_llama: Path) -> None:
    (tmp_path / "out" / "Q4_K_M").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="Q4_K_M already exists; pass --force"):
        convert_to_gguf(tiny_llama, tmp_path / "out")
    assert not (tmp_path / "out" / "F16").exists()


@needs_tools
def test_adapter_given_to_gguf_points_at_gguf_lora(tmp_path: Path) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(ArtifactError, match="--to gguf-lora"):
        convert_to_gguf(tmp_path / "adapter", tmp_path / "out")

"""ONNX conversion (onnxruntime-genai builder), its verification, and the onnxruntime-genai runtime.

Each model is exported once per module (fp32, int8, int4 in one builder process); the tests
then read what a user would check: the folders, the manifest, the verification numbers, the
generated text, and the one-line errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jmed_edge.convert.onnx import OnnxOptions, convert_to_onnx, onnx_fingerprint, verify_onnx
from jmed_edge.convert.onnx.genai_builder import SUPPORTED_ARCHITECTURES, builder_extra_options
from jmed_edge.convert.onnx.options import check_request, parse_option_pairs
from jmed_edge.convert.probes import TOKENIZER_PROBES, TOKENIZER_STRESS
from jmed_edge.errors import (
    ArtifactError,
    ConfigError,
    DependencyError,
    DiskSpaceError,
    ModelError,
    VerificationError,
)
from jmed_edge.manifest import parent_record, read_manifest
from jmed_edge.runtimes import GenerationStats, SamplingParams, open_runtime
from jmed_edge.testing.numerics import ORT_LOGPROB_ATOL

PRECISIONS = ("fp32", "int8", "int4")


def _no_artifacts(out: Path) -> bool:
    return not out.exists() or not [
        p for p in out.iterdir() if p.is_dir() and p.name.startswith(("onnx-", ".onnx-"))
    ]


# --- options: rejected before anything is built ------------------------------------------------


def test_tied_embeddings_refuse_unloadable_int4_options() -> None:
    with pytest.raises(ConfigError) as err:
        check_request(OnnxOptions(symmetric=False), ("int4",), "cpu", tied=True)
    assert "symmetric=true" in str(err.value) and "shared_embeddings=false" in str(err.value)
    with pytest.raises(ConfigError, match="lm_head=fp32"):
        check_request(OnnxOptions(lm_head="int8"), ("int4",), "cpu", tied=True)
    # The same settings load on a model whose embeddings are not tied, or when not shared.
    check_request(OnnxOptions(symmetric=False, lm_head="int8"), ("int4",), "cpu", tied=False)
    check_request(OnnxOptions(symmetric=False, shared_embeddings=False), ("int4",), "cpu", tied=True)


def test_every_option_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        check_request(OnnxOptions(block_size=48, accuracy_level=7), ("fp16", "int4"), "cpu", tied=False)
    message = str(err.value)
    assert "\n" not in message
    assert "block_size 48" in message and "accuracy_level 7" in message
    assert "precision fp16 cannot run on target cpu" in message


def test_unknown_option_suggests_the_right_name() -> None:
    with pytest.raises(ConfigError, match='did you mean "block_size"'):
        OnnxOptions.from_dict({"blocksize": 64})
    parsed = parse_option_pairs(
        ["block_size=64", "symmetric=false", "lm_head=fp32", "builder.fuse_qkv=false"]
    )
    assert parsed == {
        "block_size": 64,
        "symmetric": False,
        "lm_head": "fp32",
        "builder_options": {"fuse_qkv": "false"},
    }
    with pytest.raises(ConfigError, match="true or false"):
        parse_option_pairs(["symmetric=maybe"])


def test_named_settings_become_builder_options() -> None:
    options = OnnxOptions(block_size=128, accuracy_level=1, lm_head="fp32")
    assert builder_extra_options(options, "int4") == [
        "hf_token=false", "block_size=128", "is_symmetric=true", "accuracy_level=1", "nodes_to_exclude=/lm_head/MatMul",
    ]  # fmt: skip
    assert "matmul_mixed_precision=last_matmul:int8" in builder_extra_options(
        OnnxOptions(lm_head="int8"), "int4"
    )
    assert builder_extra_options(options, "fp32") == ["hf_token=false"]  # quantization settings do not apply


def test_every_shipped_preset_is_valid() -> None:
    import argparse

    from jmed_edge.convert.onnx.cli import add_onnx_arguments, request_from_args
    from jmed_edge.resources import shipped

    presets = sorted(shipped("convert/onnx").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"cpu-int4", "cpu-int4-quality", "cpu-int8"}
    parser = argparse.ArgumentParser()
    add_onnx_arguments(parser)
    for preset in presets:
        request = request_from_args(parser.parse_args(["--onnx-preset", preset.stem]))
        precisions = tuple(request["precisions"].split(","))
        for tied in (False, True):
            check_request(OnnxOptions.from_dict(request["options"]), precisions, request["target"], tied)
    flags = parser.parse_args(["--onnx-preset", "cpu-int4", "--onnx-option", "block_size=64"])
    assert request_from_args(flags)["options"]["block_size"] == 64  # a flag overrides the preset
    with pytest.raises(ConfigError, match='did you mean "cpu-int4-quality"'):
        request_from_args(parser.parse_args(["--onnx-preset", "cpu-int4-qualty"]))


def test_target_the_machine_cannot_run_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    import onnxruntime_genai as og

    with pytest.raises(DependencyError, match="Windows"):
        convert_to_onnx(tiny_llama, tmp_path, ("int4",), target="dml", progress=False)
    if not og.is_cuda_available():
        with pytest.raises(DependencyError, match="CUDA execution provider"):
            convert_to_onnx(tiny_llama, tmp_path, ("int4",), target="cuda", progress=False)
    with pytest.raises(ConfigError, match="precision fp16 cannot run on target cpu"):
        convert_to_onnx(tiny_llama, tmp_path, ("fp16",), progress=False)
    assert _no_artifacts(tmp_path)


def test_unsupported_architecture_lists_supported_ones(tiny_llama: Path, tmp_path: Path) -> None:
    src = tmp_path / "mamba"
    shutil.copytree(tiny_llama, src)
    config = json.loads((src / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as err:
        convert_to_onnx(src, tmp_path / "out", progress=False)
    assert "MambaForCausalLM is not supported" in str(err.value)
    assert "LlamaForCausalLM" in str(err.value) and "Qwen2ForCausalLM" in str(err.value)
    assert "LlamaForCausalLM" in SUPPORTED_ARCHITECTURES
    assert _no_artifacts(tmp_path / "out")


def test_missing_tokenizer_is_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    src = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_llama, src)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"no tokenizer\.json or tokenizer\.model"):
        convert_to_onnx(src, tmp_path / "out", progress=False)
    assert _no_artifacts(tmp_path / "out")


def test_disk_full_is_refused_before_building(tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:
    import jmed_edge.fsutil

    monkeypatch.setattr(jmed_edge.fsutil, "free_bytes", lambda path: 10_000)
    with pytest.raises(DiskSpaceError, match=r"ONNX export .* needs about"):
        convert_to_onnx(tiny_llama, tmp_path / "out", progress=False)
    assert _no_artifacts(tmp_path / "out")


def test_too_little_ram_is_refused_before_building_with_the_figures(
    tiny_llama: Path, tmp_path: Path, monkeypatch
) -> None:
    from jmed_edge.convert.onnx.convert import estimate_peak_ram
    from jmed_edge.convert.onnx.source import load_source

    monkeypatch.setenv("JMED_EDGE_RAM_BUDGET", "100MB")
    with pytest.raises(DependencyError) as err:
        convert_to_onnx(tiny_llama, tmp_path / "out", ("int4",), progress=False)
    message = str(err.value)
    assert "\n" not in message and "ONNX export (int4)" in message
    assert "needs about" in message and "only 100.0 MB is JMED_EDGE_RAM_BUDGET=100MB" in message
    assert _no_artifacts(tmp_path / "out")
    source = load_source(tiny_llama)
    # the builder's own whole-graph quantization (k_quant) is budgeted at its measured 5.6x
    streamed = estimate_peak_ram(source, "int4", OnnxOptions())
    assert estimate_peak_ram(source, "int4", OnnxOptions(algorithm="k_quant")) > streamed


def test_a_quantized_checkpoint_is_refused_naming_its_dtype(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    src = tmp_path / "int8-weights"
    shutil.copytree(tiny_llama, src)
    for path in src.glob("*.safetensors"):
        tensors = load_file(path)
        save_file({k: v.to(torch.int8) if v.dim() == 2 else v for k, v in tensors.items()}, path,
                  metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(ModelError) as err:
        convert_to_onnx(src, tmp_path / "out", progress=False)
    assert "stored as I8" in str(err.value) and "BF16, F16, F32" in str(err.value)
    assert _no_artifacts(tmp_path / "out")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_mapped_checkpoint_pages_are_given_back_and_read_again_unchanged(tmp_path: Path) -> None:
    import numpy as np

    from jmed_edge.convert.onnx.mapped_pages import mapped_files, release_mapped_files

    path = tmp_path / "w.safetensors"  # written just now: its pages are still dirty in the page cache
    np.arange(8_000_000, dtype=np.float32).tofile(path)
    weights = np.memmap(path, dtype=np.float32, mode="r")
    expected = float(weights.sum(dtype=np.float64))  # reads every page: ~32 MB resident

    def resident() -> int:
        return sum(rss for _, _, name, rss, _ in mapped_files() if name == str(path))

    assert resident() >= 30_000_000
    assert release_mapped_files() >= 30_000_000
    assert resident() < 1_000_000
    assert float(weights.sum(dtype=np.float64)) == expected  # faulted in again from the file
    del weights


def test_cli_entry_prints_one_line(tmp_path: Path, capsys) -> None:
    from jmed_edge.convert.onnx.__main__ import main

    code = main([str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--onnx-option", "block_size=48"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "does not exist" in err and "\n" not in err


def test_a_killed_builder_is_reported_with_the_precision(
    tiny_llama: Path, tmp_path: Path, monkeypatch
) -> None:
    from jmed_edge.convert.onnx.exporters import BuildJob
    from jmed_edge.convert.onnx.genai_builder import GenAIBuilderExporter
    from jmed_edge.convert.onnx.source import load_source

    # A stand-in worker that finishes int8, starts int4 and is killed as the OOM killer would.
    (tmp_path / "fake_worker.py").write_text(
        "import os, signal\n"
        "print('@@jmed start int8', flush=True)\nprint('@@jmed done int8 1.0 1000', flush=True)\n"
        "print('@@jmed start int4', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    exporter = GenAIBuilderExporter()
    exporter.worker = "fake_worker"
    jobs = [BuildJob(p, tmp_path / p, OnnxOptions()) for p in ("int8", "int4")]
    outcomes = exporter.build(load_source(tiny_llama), jobs, "cpu", workdir=tmp_path, log_path=tmp_path / "log",
                              progress=False)  # fmt: skip
    assert outcomes[0].ok and not outcomes[1].ok
    assert (
        "killed by SIGKILL (out of memory?" in outcomes[1].error
        and "while building int4" in outcomes[1].error
    )


# --- exports of real (tiny and default) models -----------------------------------------------


@pytest.fixture(scope="module")
def onnx_llama(tiny_llama: Path, tmp_path_factory) -> dict[str, Path]:
    return convert_to_onnx(tiny_llama, tmp_path_factory.mktemp("onnx-llama"), PRECISIONS, progress=False)


@pytest.fixture(scope="module")
def onnx_qwen2(tiny_qwen2: Path, tmp_path_factory) -> dict[str, Path]:
    return convert_to_onnx(tiny_qwen2, tmp_path_factory.mktemp("onnx-qwen2"), PRECISIONS, progress=False)


@pytest.fixture(scope="module")
def onnx_default(default_model: Path, tmp_path_factory) -> dict[str, Path]:
    return convert_to_onnx("default", tmp_path_factory.mktemp("onnx-default"), PRECISIONS, progress=False)


def _check_export(written: dict[str, Path], src: Path) -> None:
    assert set(written) == set(PRECISIONS)
    parent = parent_record(src)
    for precision, folder in written.items():
        assert folder.name == f"onnx-{precision}"
        for name in (
            "model.onnx",
            "model.onnx.data",
            "genai_config.json",
            "tokenizer.json",
            "chat_template.jinja",
        ):
            assert (folder / name).is_file(), f"{folder.name} lacks {name}"
        assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
        manifest = read_manifest(folder)
        assert manifest.kind == "onnx" and manifest.format == "onnx"
        assert manifest.parent["sha256"] == parent["sha256"]
        assert manifest.details["precision"] == precision and manifest.details["exporter"] == "genai-builder"
        assert manifest.details["fingerprint"] == onnx_fingerprint(src, precision)
        assert manifest.details["size_bytes"] > 0
        verification = manifest.verification
        assert verification["passed"] is True
        names = {c["name"].split(" (")[0]: c for c in verification["checks"]}
        assert names["tokenizer"]["ok"] and names["chat template"]["ok"]
        for lang in ("ja", "en"):
            stats = verification["metrics"]["languages"][lang]
            assert stats["positions"] >= 200
            if precision == "fp32":
                assert stats["max_abs_logit_diff"] < 5e-3 and stats["top1"] >= 0.98
            else:
                assert 0 < stats["kl_mean"] <= stats["kl_p99"]  # measured, not judged


@pytest.mark.slow
def test_tiny_llama_exports_and_verifies(onnx_llama: dict[str, Path], tiny_llama: Path) -> None:
    _check_export(onnx_llama, tiny_llama)


@pytest.mark.slow
def test_tiny_qwen2_with_tied_embeddings_exports_and_verifies(
    onnx_qwen2: dict[str, Path], tiny_qwen2: Path
) -> None:
    _check_export(onnx_qwen2, tiny_qwen2)
    assert read_manifest(onnx_qwen2["int4"]).details["options"]["shared_embeddings"] is True


@pytest.mark.slow
def test_default_model_exports_and_verifies(onnx_default: dict[str, Path], default_model: Path) -> None:
    _check_export(onnx_default, default_model)
    sizes = {p: read_manifest(f).details["size_bytes"] for p, f in onnx_default.items()}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    int8 = read_manifest(onnx_default["int8"]).verification["metrics"]["languages"]
    int4 = read_manifest(onnx_default["int4"]).verification["metrics"]["languages"]
    assert int8["en"]["kl_mean"] < int4["en"]["kl_mean"]  # 8 bits lose less than 4


@pytest.mark.slow
def test_generation_on_int4_streams_text(onnx_default: dict[str, Path]) -> None:
    runtime = open_runtime(onnx_default["int4"])
    try:
        assert runtime.name == "onnx"
        prompt = runtime.render_chat([{"role": "user", "content": "What is hypertension?"}])
        n_prompt = len(runtime.tokenize(prompt, add_special=True))
        stats = GenerationStats()
        pieces = list(runtime.generate(prompt, SamplingParams(max_tokens=16), stats))
    finally:
        runtime.close()
    assert "".join(pieces).strip()
    assert stats.prompt_tokens == n_prompt > 5
    assert 0 < stats.completion_tokens <= 16 and stats.finish_reason in ("stop", "length")
    assert stats.decode_tokens_per_second > 0


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_folder_loads_unchanged_in_onnxruntime_genai(onnx_llama: dict[str, Path], precision: str) -> None:
    # onnxruntime-genai's own API, as a user of the folder would call it: no jmed-edge code involved
    import numpy as np
    import onnxruntime_genai as og

    folder = onnx_llama[precision]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ids = tokenizer.encode("患者は65歳の男性で、")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    logits = np.asarray(generator.get_logits())
    first_logits = logits.reshape(-1, logits.shape[-1])[-1]  # the last position's row
    produced = []
    while not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    assert 1 <= len(produced) <= 8 and produced[0] == int(first_logits.argmax())
    assert isinstance(tokenizer.decode(produced), str)
    del generator, model
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing written


@pytest.mark.slow
def test_scores_agree_with_logits(onnx_llama: dict[str, Path]) -> None:
    from jmed_edge.runtimes.base import log_softmax

    runtime = open_runtime(onnx_llama["fp32"])
    try:
        context, continuation = "患者は65歳の男性で、", "高血圧と2型糖尿病"
        (score,) = runtime.score_continuations(context, [continuation])
        ctx = runtime.tokenize(context, add_special=True)
        whole = runtime.tokenize(context + continuation, add_special=True)
        rows = log_softmax(runtime.logits(whole))
        expected = sum(rows[len(ctx) - 1 + i, t] for i, t in enumerate(whole[len(ctx) :]))
        # scoring twice from one context (KV cache rewound in between) gives the same numbers
        again = runtime.score_continuations(context, [" A", continuation])
    finally:
        runtime.close()
    assert score.n_tokens == len(whole) - len(ctx)
    assert score.logprob == pytest.approx(expected, abs=ORT_LOGPROB_ATOL)
    assert again[1].logprob == pytest.approx(score.logprob, abs=ORT_LOGPROB_ATOL)


@pytest.mark.slow
def test_up_to_date_folders_are_not_rebuilt(onnx_llama: dict[str, Path], tiny_llama: Path) -> None:
    out = onnx_llama["int4"].parent
    before = (onnx_llama["int4"] / "model.onnx").stat().st_mtime_ns
    again = convert_to_onnx(tiny_llama, out, PRECISIONS, progress=False)
    assert again == onnx_llama
    assert (onnx_llama["int4"] / "model.onnx").stat().st_mtime_ns == before
    assert onnx_fingerprint(tiny_llama, "int4", options={"block_size": 64}) != onnx_fingerprint(
        tiny_llama, "int4"
    )
    with pytest.raises(ArtifactError, match=r"made from other inputs.*--force"):
        convert_to_onnx(tiny_llama, out, ("int4",), options={"block_size": 64}, progress=False)


@pytest.mark.slow
def test_verify_onnx_against_the_wrong_source_fails(onnx_llama: dict[str, Path], tiny_qwen2: Path) -> None:
    result = verify_onnx(onnx_llama["int8"])  # source found through the manifest
    assert result.passed and any(line.startswith("· KL vs source (ja") for line in result.lines())
    # The ONNX folder carries the source's own tokenizer: exact on the exam-text stress set too.
    n = len(TOKENIZER_PROBES) + len(TOKENIZER_STRESS)
    assert f"✓ tokenizer (ja+en probes, stress set): {n}/{n} probes" in "\n".join(result.lines())
    with pytest.raises(VerificationError) as err:
        verify_onnx(onnx_llama["fp32"], tiny_qwen2)
    assert "does not match" in str(err.value) and "tokenizer" in str(err.value)


@pytest.mark.slow
def test_lm_head_fp32_keeps_the_output_layer_unquantized(
    tiny_qwen2: Path, onnx_qwen2, tmp_path: Path
) -> None:
    written = convert_to_onnx(tiny_qwen2, tmp_path, ("int4",), options={"lm_head": "fp32"}, progress=False)
    manifest = read_manifest(written["int4"])
    assert "nodes_to_exclude=/lm_head/MatMul" in manifest.details["builder_options"]
    assert manifest.details["options"]["lm_head"] == "fp32" and manifest.verification["passed"]
    plain = read_manifest(onnx_qwen2["int4"]).details["size_bytes"]
    assert manifest.details["size_bytes"] > plain  # the fp32 lm_head is stored beside the int4 body


@pytest.mark.slow
def test_builder_failure_leaves_no_partial_folder(tiny_llama: Path, tmp_path: Path) -> None:
    options = {"builder_options": {"kv_cache_quant_scheme": "bogus"}}
    with pytest.raises(ModelError, match="builder failed for int4: ValueError: kv_cache_quant_scheme"):
        convert_to_onnx(tiny_llama, tmp_path, ("int4",), options=options, verify=False, progress=False)
    assert _no_artifacts(tmp_path)
    assert (tmp_path / "onnx-build.log").is_file()


# --- damaged artifacts: one line naming the file, never an onnxruntime crash -------------------


@pytest.fixture
def int4_copy(onnx_llama: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "onnx-int4"
    shutil.copytree(onnx_llama["int4"], copy)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("with_manifest", [True, False])
def test_truncated_external_data_is_a_clear_error(int4_copy: Path, with_manifest: bool) -> None:
    if not with_manifest:
        (int4_copy / "jmed_manifest.json").unlink()
    data = int4_copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ModelError) as err:
        open_runtime(int4_copy)
    assert "model.onnx.data" in str(err.value) and "re-convert" in str(err.value)


@pytest.mark.slow
def test_corrupt_model_file_is_a_clear_error(int4_copy: Path) -> None:
    (int4_copy / "jmed_manifest.json").unlink()
    model = int4_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:3000])
    with pytest.raises(ModelError, match=r"model\.onnx is not a valid ONNX model"):
        open_runtime(int4_copy)


@pytest.mark.slow
def test_unavailable_provider_is_a_clear_error(onnx_llama: dict[str, Path]) -> None:
    import onnxruntime_genai as og

    with pytest.raises(DependencyError, match="dml execution provider is not available"):
        open_runtime(onnx_llama["int4"], provider="dml")
    if not og.is_cuda_available():
        with pytest.raises(DependencyError, match="onnxruntime-genai-cuda"):
            open_runtime(onnx_llama["int4"], device="cuda")
    with pytest.raises(ConfigError, match="unknown ONNX provider"):
        open_runtime(onnx_llama["int4"], provider="tpu")

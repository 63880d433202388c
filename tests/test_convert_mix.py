"""A mixed-precision GGUF end to end, on a tiny Llama with hidden size 256 (K types really apply).

One ``convert_to_gguf`` with a budget halfway between the smallest and the largest reachable
size: measured sensitivities, the plan, one quantization with the imatrix, the artifact folder;
then llama.cpp's own ``llama-quantize --tensor-type-file`` must rebuild the file byte for byte.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jmed_edge.convert.llamacpp_tools import quantize_binary, tools_status
from jmed_edge.convert.mix import METADATA_MARGIN, TYPES_FILE, MixSpec
from jmed_edge.manifest import read_manifest, sha256_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not tools_status()[0], reason="llama.cpp tools not set up (jmed-edge setup)"),
]

CANDIDATES = ("Q2_K", "Q4_K", "Q8_0", "F16")


@pytest.fixture(scope="module")
def tiny256(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from jmed_edge.testing.tiny_models import build_tiny_model

    return build_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny256", "llama", hidden_size=256, intermediate_size=512
    )


@pytest.fixture(scope="module")
def base(tiny256: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from jmed_edge.convert.gguf import convert_to_gguf

    return convert_to_gguf(tiny256, tmp_path_factory.mktemp("gguf") / "out", quants="q4_k_m", verify=False)


def _file(folder: Path) -> Path:
    return folder / read_manifest(folder).details["file"]


def _reachable(f16: Path) -> tuple[int, int]:
    """(smallest, largest) file size the candidates can make, from the plan's exact sizes."""
    from jmed_edge.convert.ggufinfo import read_gguf
    from jmed_edge.convert.mix_plan import Tensor, group_options, tensor_groups, tensor_nbytes

    tensors = [Tensor(n, d) for n, d, _ in read_gguf(f16).tensors]
    groups = tensor_groups(tensors, 2)
    grouped = {t.name for g in groups for t in g.tensors}
    fixed = f16.stat().st_size - sum(tensor_nbytes("F16", t) for t in tensors if t.name in grouped)
    sizes = [[o.nbytes for o in group_options(g, CANDIDATES)[0]] for g in groups]
    return fixed + sum(min(s) for s in sizes), fixed + sum(max(s) for s in sizes)


@pytest.fixture(scope="module")
def mixed(tiny256: Path, base: dict[str, Path]) -> tuple[Path, int]:
    from jmed_edge.convert.gguf import convert_to_gguf

    low, high = _reachable(_file(base["F16"]))
    budget = (low + high) // 2 + 4096
    spec = MixSpec(budget, "MIX-TEST", {"ja": 0.5, "en": 0.5}, CANDIDATES, 2, 64)
    out = base["F16"].parent
    done = convert_to_gguf(tiny256, out, quants=(), mixes=[spec], force=True, verify=True)
    return done["MIX-TEST"], budget


def test_the_mix_fits_its_budget_and_records_its_types(mixed: tuple[Path, int]) -> None:
    folder, budget = mixed
    manifest = read_manifest(folder)
    mix = manifest.details["mix"]
    file = _file(folder)
    assert file.stat().st_size <= budget
    assert mix["size_bytes"] == file.stat().st_size
    # exact block arithmetic; the file's metadata differs from the F16's by a few hundred bytes
    assert abs(mix["predicted_size_bytes"] - mix["size_bytes"]) < 2048
    assert manifest.config["quant"] == "MIX-TEST"
    chosen = {t for types in mix["groups"].values() for t in types}
    assert len(chosen) >= 2, "a budget halfway between the extremes takes more than one type"
    assert (folder / TYPES_FILE).is_file()
    assert manifest.verification["checks"], "verified against the source like any other artifact"


def test_the_prediction_is_close_to_the_real_kl(mixed: tuple[Path, int]) -> None:
    mix = read_manifest(mixed[0]).details["mix"]
    for lang in ("ja", "en"):
        predicted, real = mix["predicted_kl"][lang], mix["measured_kl_sensitivity_text"][lang]
        # additive model vs the real mix on the same positions: within 22% on the 135M default at
        # the Q3_K_M..Q5_K_M sizes (worst: ja 0.011 vs 0.014, F16 among the types); the bound
        # leaves room for a random tiny model's interactions
        assert abs(real - predicted) <= 0.5 * predicted + 0.01, (lang, predicted, real)


def test_llama_quantize_rebuilds_it_byte_for_byte(
    mixed: tuple[Path, int], base: dict[str, Path], tmp_path: Path
) -> None:
    folder = mixed[0]
    f16 = _file(base["F16"])
    imatrix = f16.parent.parent / "imatrix-medical-ja-en.gguf"
    theirs = tmp_path / "tool.gguf"
    subprocess.run(
        [
            str(quantize_binary()),
            "--imatrix",
            imatrix.name,  # the name as recorded in quantize.imatrix.file, as jmed-edge records it
            "--tensor-type-file",
            str(folder / TYPES_FILE),
            str(f16),
            str(theirs),
            "Q8_0",
            "2",
        ],
        check=True,
        capture_output=True,
        cwd=imatrix.parent,
    )
    assert sha256_file(theirs) == sha256_file(_file(folder))


def test_a_budget_below_the_smallest_size_names_it(base: dict[str, Path], tmp_path: Path) -> None:
    from jmed_edge.convert.mix import build_mix
    from jmed_edge.convert.progress import LogProgress
    from jmed_edge.errors import ConfigError

    low, _ = _reachable(_file(base["F16"]))
    spec = MixSpec(low // 2, "MIX-TINY", {"ja": 0.5, "en": 0.5}, CANDIDATES, 2, 64)
    with pytest.raises(ConfigError, match="below the smallest reachable size") as err:
        build_mix(_file(base["F16"]), tmp_path / "m.gguf", spec, progress=LogProgress())
    assert str(low + METADATA_MARGIN) in str(err.value)
    assert not (tmp_path / "m.gguf").exists()


def test_a_budget_above_f16_copies_it(base: dict[str, Path], tmp_path: Path) -> None:
    from jmed_edge.convert.mix import build_mix
    from jmed_edge.convert.progress import LogProgress

    f16 = _file(base["F16"])
    spec = MixSpec(f16.stat().st_size * 2, "MIX-BIG", {"ja": 0.5, "en": 0.5}, CANDIDATES, 2, 64)
    notes: list[str] = []
    progress = LogProgress()
    progress.note = notes.append  # type: ignore[method-assign]
    result = build_mix(f16, tmp_path / "m.gguf", spec, progress=progress)
    assert result.record["copied_f16"] is True
    assert sha256_file(tmp_path / "m.gguf") == sha256_file(f16)
    assert any("copy of the F16" in n for n in notes)


def test_sensitivities_below_arithmetic_noise_are_said_to_decide_nothing(
    mixed: tuple[Path, int], base: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a random-weight model that repeats its input token measures: every increment ~1e-45
    from jmed_edge.convert import mix_probe
    from jmed_edge.convert.mix import build_mix
    from jmed_edge.convert.progress import LogProgress

    saved = json.loads((mixed[0].parent / "mix-sensitivity.json").read_text())
    flat = {g: {k: dict.fromkeys(v, 1e-45) for k, v in per.items()} for g, per in saved["increments"].items()}
    monkeypatch.setattr(
        mix_probe, "measure", lambda *a, **k: mix_probe.Sensitivity(saved["base_kl"], flat, 0.0, 1)
    )
    notes: list[str] = []
    progress = LogProgress()
    progress.note = notes.append  # type: ignore[method-assign]
    spec = MixSpec(mixed[1], "MIX-FLAT", {"ja": 0.5, "en": 0.5}, CANDIDATES, 2, 64)
    record = build_mix(_file(base["F16"]), tmp_path / "m.gguf", spec, progress=progress).record
    assert record["decidable"] is False
    assert any("chosen by noise" in n for n in notes)
    assert read_manifest(mixed[0]).details["mix"]["decidable"] is True


def test_cli_budget_without_unit_is_one_line(run_cli) -> None:
    code, out, err = run_cli("convert", "default", "--to", "gguf", "--budget", "5.5", "--out", "/tmp/x")
    assert code != 0
    assert "with a unit" in out + err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("flags", [("--budget", "5.5GB"), ("--quant", "int8,mix:5.5GB")])
def test_a_budget_for_onnx_is_one_line_naming_gguf(run_cli, tmp_path: Path, flags) -> None:
    code, out, err = run_cli("convert", "default", "--to", "onnx", *flags, "--out", tmp_path / "o")
    assert code != 0 and "applies to --to gguf" in out + err and "Traceback" not in out + err
    assert not (tmp_path / "o").exists()


def test_sensitivities_are_saved_for_the_next_budget(mixed: tuple[Path, int]) -> None:
    saved = json.loads((mixed[0].parent / "mix-sensitivity.json").read_text())
    assert saved["probes"] > 1 and saved["increments"]


def test_report_and_tui_name_the_mix_with_its_bits(mixed: tuple[Path, int]) -> None:
    from jmed_edge.artifacts import describe
    from jmed_edge.report.build import _format_and_quant
    from jmed_edge.tui.backend import quant_of

    folder = mixed[0]
    bpw = read_manifest(folder).details["bits_per_weight"]
    assert quant_of(describe(folder)) == f"MIX-TEST ({bpw:.2f} bpw)"
    assert _format_and_quant(str(folder)) == ("gguf", f"MIX-TEST ({bpw:.2f} bpw)")


def test_budget_ram_subtracts_the_measured_overhead(base: dict[str, Path], tmp_path: Path) -> None:
    from jmed_edge.convert.mix import build_mix, mix_spec
    from jmed_edge.convert.progress import LogProgress
    from jmed_edge.errors import ConfigError

    f16 = _file(base["F16"])
    spec = mix_spec("2GB", types=",".join(CANDIDATES), ram=True, n_ctx=512)
    assert spec.label == "MIX-RAM2GB"
    ram = build_mix(f16, tmp_path / "m.gguf", spec, progress=LogProgress()).record["ram"]
    # the interpreter and llama.cpp alone take tens of MB; the F16 itself is mapped, not counted twice
    assert ram["overhead_bytes"] > 20 * 1024**2
    assert ram["peak_rss_bytes"] == ram["overhead_bytes"] + f16.stat().st_size
    assert ram["file_budget_bytes"] == 2 * 1024**3 - ram["overhead_bytes"]
    with pytest.raises(ConfigError, match="leaves nothing for the weights"):
        build_mix(f16, tmp_path / "n.gguf", mix_spec("1MB", ram=True, n_ctx=512), progress=LogProgress())


def test_cli_budget_makes_only_the_mix(
    run_cli, tiny256: Path, base: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    low, high = _reachable(_file(base["F16"]))
    kb = ((low + high) // 2 + 8192) // 1024
    out = tmp_path / "gguf"
    code, stdout, stderr = run_cli(
        "convert", tiny256, "--to", "gguf", "--budget", f"{kb}KB", "--mix-types", "q2_k,q4_k,q8_0",
        "--lang-weight", "ja=0.7,en=0.3", "--no-verify", "--out", out,
    )  # fmt: skip
    assert code == 0, stdout + stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["F16", f"MIX-{kb}KB"]
    mix = read_manifest(out / f"MIX-{kb}KB").details["mix"]
    assert mix["lang_weights"] == {"ja": 0.7, "en": 0.3}
    assert mix["size_bytes"] <= kb * 1024
    assert (out / f"MIX-{kb}KB" / TYPES_FILE).is_file()
    # a recipe (default weights and types) rebuilds a mix made with other weights or types ...
    from jmed_edge.convert import mix, mix_plan
    from jmed_edge.pipeline.run import _gguf_fresh

    assert _gguf_fresh(tiny256, out, [f"mix:{kb}KB"], "auto", "f16") == {}
    # ... and finds it fresh when its settings are the ones it was made with, for the same budget only
    monkeypatch.setattr(mix, "DEFAULT_WEIGHTS", {"ja": 0.7, "en": 0.3})
    monkeypatch.setattr(mix_plan, "DEFAULT_CANDIDATES", ("Q2_K", "Q4_K", "Q8_0"))
    fresh = _gguf_fresh(tiny256, out, [f"mix:{kb}KB"], "auto", "f16")
    assert set(fresh) == {"F16", f"MIX-{kb}KB"}
    assert _gguf_fresh(tiny256, out, [f"mix:{kb + 1}KB"], "auto", "f16") == {}

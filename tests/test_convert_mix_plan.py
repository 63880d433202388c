"""Mixed-precision planning without a model: fallbacks, exact sizes, the knapsack, user input."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from jmed_edge.convert.mix import parse_budget, parse_lang_weights, split_mix
from jmed_edge.convert.mix_plan import (
    Group,
    Option,
    Tensor,
    choose,
    effective_type,
    group_options,
    parse_candidates,
    tensor_groups,
    tensor_nbytes,
    tensor_type_file,
)
from jmed_edge.errors import ConfigError


def test_fallbacks_follow_llama_cpp() -> None:
    # SmolLM2-135M: hidden 576 is not a multiple of 256, its FFN width 1536 is.
    assert effective_type("Q4_K", 576) == "Q5_0"
    assert effective_type("Q2_K", 576) == "Q4_0"
    assert effective_type("Q6_K", 576) == "Q8_0"
    assert effective_type("Q4_K", 1536) == "Q4_K"
    assert effective_type("Q4_K", 40) == "F16"  # not even a multiple of 32


def test_sizes_are_exact_block_arithmetic() -> None:
    t = Tensor("blk.0.ffn_down.weight", (1536, 576))
    assert tensor_nbytes("Q4_K", t) == 1536 * 576 // 256 * 144
    assert tensor_nbytes("Q8_0", t) == 1536 * 576 // 32 * 34
    assert tensor_nbytes("F16", Tensor("x", (7, 1))) == 32  # padded to the GGUF alignment


def _model(n_layers: int = 6) -> list[Tensor]:
    tensors = [Tensor("token_embd.weight", (256, 1000))]
    for i in range(n_layers):
        tensors += [
            Tensor(f"blk.{i}.attn_norm.weight", (256,)),
            Tensor(f"blk.{i}.attn_q.weight", (256, 256)),
            Tensor(f"blk.{i}.ffn_down.weight", (512, 256)),
        ]
    return tensors


def test_groups_are_roles_by_layer_band() -> None:
    groups = {g.name: g for g in tensor_groups(_model(6), bands=2)}
    assert set(groups) == {"token_embd", "attn_q@0-2", "attn_q@3-5", "ffn_down@0-2", "ffn_down@3-5"}
    assert [t.name for t in groups["attn_q@3-5"].tensors] == [f"blk.{i}.attn_q.weight" for i in (3, 4, 5)]


def test_options_merge_types_that_fall_back_to_the_same() -> None:
    group = Group("attn_q@0-0", "attn_q", [Tensor("blk.0.attn_q.weight", (576, 576))])
    options, notes = group_options(group, ["Q2_K", "Q3_K", "Q4_K", "Q8_0"])
    assert [sorted(set(o.types.values())) for o in options] == [["Q4_0"], ["Q5_0"], ["Q8_0"]]
    assert notes == [
        "attn_q@0-0: Q2_K -> Q4_0, Q3_K -> Q4_0, Q4_K -> Q5_0 (rows of 576; llama.cpp's fallback)"
    ]


@pytest.mark.parametrize(
    ("seed", "lowest_kl"),
    [(0, 0.0), (1, -0.5)],  # F16 is measured against the all-Q8_0 base: its increment is negative
)
def test_knapsack_matches_brute_force(seed: int, lowest_kl: float) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        groups = [Group(f"g{i}", "r", []) for i in range(4)]
        options = {
            g.name: [
                Option(str(k), {g.name: str(k)}, rng.randint(10, 100), rng.uniform(lowest_kl, 1))
                for k in range(3)
            ]
            for g in groups
        }
        budget = rng.randint(100, 300)
        feasible = [
            combo
            for combo in itertools.product(*(options[g.name] for g in groups))
            if sum(o.nbytes for o in combo) <= budget
        ]
        if not feasible:
            with pytest.raises(ValueError):
                choose(groups, options, budget)
            continue
        best = min(sum(o.kl for o in combo) for combo in feasible)
        plan = choose(groups, options, budget, grid=budget)  # unit 1 byte: exact
        assert plan.nbytes <= budget
        assert plan.predicted_kl == pytest.approx(best)


def test_tensor_type_file_patterns_match_one_tensor_each() -> None:
    text = tensor_type_file({"blk.1.attn_q.weight": "Q4_K", "blk.11.attn_q.weight": "Q8_0"})
    assert text.splitlines()[0].endswith("=q4_k")
    pattern = text.splitlines()[0].rsplit("=", 1)[0]
    assert re.search(pattern, "blk.1.attn_q.weight")
    assert not re.search(pattern, "blk.11.attn_q.weight")


def test_user_input_is_checked() -> None:
    assert parse_budget("5.5GB") == (int(5.5 * 1024**3), "MIX-5.5GB")
    with pytest.raises(ConfigError, match="with a unit"):
        parse_budget("5.5")
    assert parse_lang_weights("ja=3,en=1") == {"ja": 0.75, "en": 0.25}
    with pytest.raises(ConfigError, match=r"ja=0\.7,en=0\.3"):
        parse_lang_weights("fr=1")
    with pytest.raises(ConfigError, match="every language weight 0"):
        parse_lang_weights("ja=0,en=0")
    with pytest.raises(ConfigError, match='did you mean "Q4_K"'):
        parse_candidates("q4_kk")
    assert split_mix(["q8_0", "mix:5.5GB"]) == (["q8_0"], ["5.5GB"])
    with pytest.raises(ConfigError):
        split_mix(["mix:lots"])


def test_a_preset_names_a_budget(tmp_path) -> None:
    from jmed_edge.convert.presets import load_preset

    path = tmp_path / "p.yaml"
    path.write_text("name: p\ndescription: d\ndevice: cpu\nmemory: 8GB\nbudgets: [4.5GB]\n")
    assert load_preset(path).budgets == ["4.5GB"]
    path.write_text("name: p\ndescription: d\ndevice: cpu\nmemory: 8GB\n")
    with pytest.raises(ConfigError, match=r"name quants .* or budgets"):
        load_preset(path)
    path.write_text("name: p\ndescription: d\ndevice: cpu\nmemory: 8GB\nbudgets: ['450']\n")
    with pytest.raises(ConfigError, match="with a unit"):
        load_preset(path)


def test_a_recipe_takes_a_mix_among_its_quants(tmp_path) -> None:
    from jmed_edge.pipeline.recipe import GgufSection

    assert GgufSection(quants=["q8_0", "mix:5.5GB"]).quants == ["q8_0", "mix:5.5GB"]
    with pytest.raises(ValueError, match="with a unit"):
        GgufSection(quants=["q8_0", "mix:5.5"])
    with pytest.raises(ValueError, match="unknown quant type"):
        GgufSection(quants=["q9_0"])


def test_a_type_that_needs_an_imatrix_is_refused_without_one(tmp_path) -> None:
    from jmed_edge.convert.mix import MixSpec, build_mix
    from jmed_edge.convert.progress import LogProgress

    spec = MixSpec(10**9, "MIX-1GB", {"ja": 0.5, "en": 0.5}, ("IQ4_NL", "Q8_0"), 2, 64)
    with pytest.raises(ConfigError, match="IQ4_NL need an importance matrix"):
        build_mix(tmp_path / "absent.gguf", tmp_path / "m.gguf", spec, progress=LogProgress())
    assert not (tmp_path / "m.gguf").exists()


def test_saved_sensitivities_are_not_reused_for_other_types(tmp_path) -> None:
    from jmed_edge.convert.mix_probe import _cache_key

    f16 = tmp_path / "m.gguf"
    f16.write_bytes(b"GGUF")
    group = Group("attn_q@0-0", "attn_q", [Tensor("blk.0.attn_q.weight", (256, 256))])
    few = {group.name: group_options(group, ["Q4_K", "Q8_0"])[0]}
    more = {group.name: group_options(group, ["Q2_K", "Q4_K", "Q8_0"])[0]}
    assert _cache_key(f16, None, [group], few, 128) == _cache_key(f16, None, [group], few, 128)
    assert _cache_key(f16, None, [group], few, 128) != _cache_key(f16, None, [group], more, 128)
    assert _cache_key(f16, None, [group], few, 128) != _cache_key(f16, None, [group], few, 512)


def test_measured_noise_past_what_a_type_can_cost_counts_as_zero() -> None:
    from jmed_edge.convert.mix_probe import Sensitivity

    both = {"ja": 0.0, "en": 0.0}
    sens = Sensitivity(
        dict(both),
        {
            "g": {
                "Q4_K": {"ja": 0.01, "en": -0.001},  # below the Q8_0 base: noise
                "Q8_0": dict(both),
                "F16": {"ja": -0.002, "en": 0.0005},  # above the base: noise
            }
        },
        0.0,
        3,
    )
    assert sens.cost("g", "Q4_K", "ja") == 0.01
    assert sens.cost("g", "Q4_K", "en") == 0.0
    assert sens.cost("g", "F16", "ja") == -0.002
    assert sens.cost("g", "F16", "en") == 0.0
    # on equal cost the search keeps the smaller type
    group = Group("g", "r", [])
    opts = [
        Option("Q4_K", {"t": "Q4_K"}, 60),
        Option("Q8_0", {"t": "Q8_0"}, 110),
        Option("F16", {"t": "F16"}, 200),
    ]
    for o in opts:
        o.kl = sens.weighted("g", o, {"ja": 0.0, "en": 1.0})
    assert choose([group], {"g": opts}, 1000, grid=1000).choice["g"].requested == "Q4_K"
    for o in opts:
        o.kl = sens.weighted("g", o, {"ja": 1.0, "en": 0.0})
    assert choose([group], {"g": opts}, 1000, grid=1000).choice["g"].requested == "F16"
    assert choose([group], {"g": opts}, 150, grid=150).choice["g"].requested == "Q8_0"

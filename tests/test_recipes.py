"""Every shipped recipe and accelerate config validates and documents itself (no model is loaded)."""

from __future__ import annotations

import re

import pytest
import yaml

from jmed_edge.errors import ConfigError
from jmed_edge.recipes_cli import shipped_recipes
from jmed_edge.resources import shipped
from jmed_edge.train import load_recipe
from jmed_edge.train.recipe import SECTIONS, validate_recipe

RECIPES = sorted(shipped_recipes())
EXPECTED = {"demo", "qwen2-7b-lora", "jmedlora-lora", "jmedlora-qlora"}


def test_the_expected_recipes_are_shipped():
    assert set(RECIPES) >= EXPECTED


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_validates(name):
    recipe = load_recipe(name)
    assert recipe.shipped
    for path, _ in recipe.data_files():
        assert path.is_file(), path  # bundled data resolves against the shipped root


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipe_opens_with_what_how_and_hardware(name):
    lines = shipped_recipes()[name].read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert header and header[0].startswith("# ") and len(header[0]) > 20
    assert f"jmed-edge train {name}" in text or f"recipes/{name}.yaml" in text
    assert re.search(r"Hardware:", text)


@pytest.mark.parametrize("name", RECIPES)
def test_every_setting_is_commented(name):
    lines = shipped_recipes()[name].read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue  # list entries belong to the (commented) key above them
        is_section = re.fullmatch(r"[a-z_]+:", stripped) and not line.startswith(" ")
        commented = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
        assert is_section or commented, f"{name}.yaml line {i + 1} has no comment: {line!r}"


def test_7b_recipes_point_at_an_editable_placeholder_and_say_so():
    for name in ("qwen2-7b-lora", "jmedlora-lora", "jmedlora-qlora"):
        text = shipped_recipes()[name].read_text(encoding="utf-8")
        assert "/models/" in load_recipe(name).model.path and "PLACEHOLDER" in text


def test_jmedlora_settings():
    lora = load_recipe("jmedlora-lora")
    assert (lora.lora.r, lora.lora.alpha, lora.lora.dropout) == (8, 32, 0.05)
    assert lora.lora.target_modules == ["q_proj", "k_proj", "v_proj"]
    assert (lora.train.lr, lora.train.batch_size, lora.train.max_length) == (5e-5, 8, 512)
    qlora = load_recipe("jmedlora-qlora")
    assert (qlora.lora.r, qlora.lora.alpha, qlora.lora.dropout) == (64, 16, 0.1)
    assert qlora.lora.target_modules == "all-linear" and qlora.model.quantization == "nf4"
    assert qlora.train.lr == 2e-4


def test_demo_is_small_enough_for_a_cpu():
    demo = load_recipe("demo")
    assert demo.model.path == "default" and demo.model.quantization == "none"
    assert demo.train.max_steps <= 60 and demo.train.max_length <= 256


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_accelerate_configs(name):
    config = yaml.safe_load(shipped(f"recipes/accelerate/{name}.yaml").read_text(encoding="utf-8"))
    assert config["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}[name]
    assert config["num_processes"] >= 2
    if name == "fsdp":
        assert config["fsdp_config"]["fsdp_use_orig_params"] is True  # LoRA mixes frozen and trainable params
    for recipe in EXPECTED - {"demo"}:
        assert "recipes/accelerate/ddp.yaml" in shipped_recipes()[recipe].read_text(encoding="utf-8")


def test_other_stages_sections_are_left_alone_but_typos_are_not():
    demo = load_recipe("demo").model_dump(include=set(SECTIONS))
    validate_recipe(
        {**demo, "convert": {"gguf": {"quants": ["q8_0"]}}, "bench": {}, "report": {"anything": 1}}
    )
    with pytest.raises(ConfigError, match='lorra: unknown section \\(did you mean "lora"\\?\\)'):
        validate_recipe({**demo, "lorra": {"r": 4}})


def test_a_setting_outside_its_section_is_an_error_not_ignored():
    demo = load_recipe("demo").model_dump(include=set(SECTIONS))
    with pytest.raises(ConfigError) as err:
        validate_recipe({**demo, "max_steps": 3, "learning_rate": 1e-4})
    assert "max_steps: a train setting; put it under train: (or --set train.max_steps=...)" in str(err.value)
    assert "learning_rate: a train setting; put it under train: (or --set train.lr=...)" in str(err.value)
    with pytest.raises(ConfigError, match="max_steps: a train setting"):
        load_recipe("demo", ["max_steps=3"])


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_recipe(
            "demo", ["lora.rank=4", "train.lr=-1", "train.precision=f16", "data.files=[missing.jsonl]"]
        )
    message = str(err.value)
    assert message.count(";") >= 3 and "has 4 problems" in message
    assert 'lora.rank: unknown key (did you mean "r"?)' in message
    assert "train.lr: Input should be greater than 0" in message
    assert "train.precision: expected" in message and 'did you mean "fp16"' in message
    assert "data.files[0]:" in message and "missing.jsonl not found" in message
    assert "\n" not in message


def test_overrides_are_read_as_yaml():
    recipe = load_recipe(
        "demo", ["lora.target_modules=[q_proj, v_proj]", "train.max_steps=5", "data.eval_split=0"]
    )
    assert recipe.lora.target_modules == ["q_proj", "v_proj"] and recipe.train.max_steps == 5
    with pytest.raises(ConfigError, match="--set takes key=value"):
        load_recipe("demo", ["train.max_steps"])


def test_copied_shipped_recipe_still_finds_bundled_data(tmp_path):
    copy = tmp_path / "mine.yaml"
    copy.write_text(shipped_recipes()["demo"].read_text(encoding="utf-8"), encoding="utf-8")
    recipe = load_recipe(copy)
    assert (
        not recipe.shipped
        and recipe.data_files()[0][0] == shipped("recipes/data/medical_instruct_sample.jsonl").resolve()
    )
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    own = tmp_path / "recipes" / "data" / "medical_instruct_sample.jsonl"
    own.write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    assert load_recipe(copy).data_files()[0][0] == own  # a user's own file next to the recipe wins

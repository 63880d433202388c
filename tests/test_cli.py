from __future__ import annotations

import subprocess
import sys

import pytest

from jmed_edge.cli import STAGES


def test_help_lists_every_stage_with_an_example(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for stage in STAGES:
        assert stage.name in out
        assert stage.example in out


@pytest.mark.parametrize("stage", [s.name for s in STAGES])
def test_each_stage_help_has_a_copy_pasteable_example(stage, run_cli):
    code, out, _ = run_cli(stage, "--help")
    assert code == 0
    assert "example" in out and "jmed-edge " + stage in out


def test_user_error_is_one_line_without_traceback(run_cli, tmp_path):
    code, _, err = run_cli("model", "info", tmp_path / "nowhere")
    assert code == 2
    assert err.strip().startswith("error:")
    assert "does not exist" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jmed_edge", "--debug", "model", "info", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ArtifactError" in result.stderr


def test_recipes_ls_and_cp(run_cli, tmp_path):
    code, out, _ = run_cli("recipes", "ls")
    assert code == 0 and "demo" in out
    dest = tmp_path / "mine.yaml"
    assert run_cli("recipes", "cp", "demo", dest)[0] == 0
    assert dest.read_text(encoding="utf-8").startswith("#")
    code, _, err = run_cli("recipes", "cp", "demo", dest)
    assert code == 2 and "--force" in err
    code, _, err = run_cli("recipes", "cp", "dmeo", tmp_path / "x.yaml")
    assert code == 2 and 'did you mean "demo"' in err

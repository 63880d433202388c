"""The spine's building blocks: atomic writes, manifests, registries."""

from __future__ import annotations

import json

import pytest

from jmed_edge.errors import ArtifactError, ConfigError
from jmed_edge.fsutil import parse_bytes, staging_dir
from jmed_edge.manifest import MANIFEST_NAME, Manifest, check_files, parent_record, read_manifest
from jmed_edge.registry import Registry


def test_staging_dir_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "artifact"
    with pytest.raises(RuntimeError), staging_dir(dest) as tmp:
        (tmp / "weights.bin").write_bytes(b"x" * 10)
        raise RuntimeError("crash half-way")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_staging_dir_renames_on_success_and_refuses_overwrite(tmp_path):
    dest = tmp_path / "artifact"
    with staging_dir(dest) as tmp:
        (tmp / "a.txt").write_text("one")
        (tmp / "jmed_manifest.json").write_text("{}")  # what every stage seals its output with
    assert (dest / "a.txt").read_text() == "one"
    with pytest.raises(ArtifactError, match="--force"), staging_dir(dest):
        pass
    with staging_dir(dest, force=True) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_force_never_replaces_a_folder_jmed_edge_did_not_write(tmp_path):
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with (
        pytest.raises(ArtifactError, match=r"did not write .*pick another --out"),
        staging_dir(mine, force=True),
    ):
        pass
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-notes"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with staging_dir(empty, force=True) as tmp:  # an empty folder holds nothing to lose
        (tmp / "a.txt").write_text("one")
    assert (empty / "a.txt").exists()


def test_staging_dir_removes_partials_of_a_killed_run(tmp_path):
    stale = tmp_path / ".artifact.partial-abc123"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    with staging_dir(tmp_path / "artifact") as tmp:
        (tmp / "ok").write_text("ok")
    assert not stale.exists()


def test_manifest_seal_read_and_check(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"abc")
    sealed = Manifest(kind="model", format="hf-safetensors", name="m", license="apache-2.0").seal(tmp_path)
    again = read_manifest(tmp_path)
    assert again.sha256 == sealed.sha256 and again.files["model.bin"]["size"] == 3
    assert "torch" in again.versions or "python" in again.versions
    assert check_files(tmp_path, again) == []
    (tmp_path / "model.bin").write_bytes(b"abcd")
    assert check_files(tmp_path, again) == ["model.bin has 4 bytes, manifest says 3"]
    child = parent_record(tmp_path)
    assert child["sha256"] == sealed.sha256 and child["kind"] == "model"


def test_corrupt_or_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match=r"has no jmed_manifest\.json"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="not a valid manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"kind": "blob", "format": "x"}))
    with pytest.raises(ArtifactError, match='unknown artifact kind "blob"'):
        read_manifest(tmp_path)


def test_registry_suggests_the_closest_name():
    reg: Registry[int] = Registry("quant type")
    reg.add("q4_k_m", "math:pi")
    reg.add("q8_0", "math:e")
    assert reg.get("q8_0") == pytest.approx(2.718, abs=1e-3)
    with pytest.raises(ConfigError, match=r'unknown quant type "q4_km" \(did you mean "q4_k_m"\?\)'):
        reg.get("q4_km")


@pytest.mark.parametrize(
    ("text", "value"),
    [("8GB", 8 * 1024**3), ("512 MB", 512 * 1024**2), ("1.5GiB", int(1.5 * 1024**3)), ("100", 100)],
)
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_nonsense():
    with pytest.raises(ConfigError, match="8GB"):
        parse_bytes("eight gigs")


def test_corrupt_gguf_header_is_one_line_not_a_crash(tmp_path):
    from jmed_edge.artifacts import describe
    from jmed_edge.models.default import default_gguf

    head = bytearray(default_gguf().read_bytes()[:4096])
    head[24:32] = b"\xff" * 8  # the first key's length: far beyond the file
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(head))
    with pytest.raises(ArtifactError, match="not a readable GGUF"):
        describe(bad)
    assert describe(default_gguf()).format == "gguf"

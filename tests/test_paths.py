"""config_paths.yaml: resolution, placeholders, overrides and the error sentences."""
from __future__ import annotations

import pytest

from classification.errors import UserInputError
from classification.paths import DATASET_KEYS, DEFAULT_CONFIG, config_file, configured, dataset_path, load_paths


def test_shipped_config_lists_every_key_as_placeholder():
    paths = load_paths(DEFAULT_CONFIG)
    assert set(paths) == set(DATASET_KEYS)
    assert all(v is None for v in paths.values())


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "data" / "inet").mkdir(parents=True)
    cfg = tmp_path / "conf" / "paths.yaml"
    cfg.write_text("imagenet: ../data/inet\nimagenetc: /path/to/imagenet-c\n")
    monkeypatch.chdir("/")
    assert dataset_path("imagenet", cfg) == (tmp_path / "data" / "inet").resolve()
    with pytest.raises(UserInputError, match=r"key 'imagenetc' in .*paths\.yaml is not set"):
        dataset_path("imagenetc", cfg)
    with pytest.raises(UserInputError, match=r"key 'vizwiz' is missing from .*paths\.yaml"):
        dataset_path("vizwiz", cfg)
    assert configured("imagenetc", cfg) is None


def test_environment_variable_and_override(tmp_path, monkeypatch):
    cfg = tmp_path / "env.yaml"
    cfg.write_text(f"imagenet: {tmp_path}/missing\n")
    monkeypatch.setenv("SYMPIE_CONFIG", str(cfg))
    assert config_file() == cfg
    with pytest.raises(UserInputError, match=r"missing \(from key 'imagenet' of .*env\.yaml\) does not exist"):
        dataset_path("imagenet")
    assert dataset_path("imagenet", override=tmp_path) == tmp_path
    with pytest.raises(UserInputError, match="from the command line"):
        dataset_path("imagenet", override=tmp_path / "nope")


def test_bad_config_files(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_paths(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(UserInputError, match="must map dataset keys"):
        load_paths(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("imagenet: [unclosed\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_paths(tmp_path / "broken.yaml")

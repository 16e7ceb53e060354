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


def test_byte_order_mark_and_crlf_line_endings_are_read(tmp_path):
    (tmp_path / "inet").mkdir()
    (tmp_path / "win.yaml").write_bytes(b"\xef\xbb\xbfimagenet: inet\r\nacdc: /path/to/acdc\r\n")
    assert load_paths(tmp_path / "win.yaml") == {"imagenet": tmp_path / "inet", "acdc": None}


def test_a_tab_is_reported_in_one_line_with_its_place(tmp_path):
    (tmp_path / "tab.yaml").write_text("imagenet: /a\n\tacdc: /b\n")
    with pytest.raises(UserInputError) as err:
        load_paths(tmp_path / "tab.yaml")
    assert "\n" not in str(err.value) and "\t" not in str(err.value)
    assert "character '\\t'" in str(err.value) and "line 2, column 1" in str(err.value)


@pytest.mark.parametrize("text, shown", [("imagenet: [/a, /b]\n", "['/a', '/b']"), ("imagenet:\n  train: /a\n", "{'train'"),
                                         ("imagenet: yes\n", "True")])
def test_a_value_that_is_not_a_path_is_named(tmp_path, text, shown):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(UserInputError, match=r"key 'imagenet' in .*c\.yaml holds .*not a folder path") as err:
        dataset_path("imagenet", tmp_path / "c.yaml")
    assert shown in str(err.value)


def test_empty_config_a_config_folder_and_a_file_for_a_folder(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(UserInputError, match=r"key 'imagenet' is missing from .*empty\.yaml"):
        dataset_path("imagenet", tmp_path / "empty.yaml")
    with pytest.raises(UserInputError, match=r"config file .* is a folder, not a file"):
        load_paths(tmp_path)
    (tmp_path / "data.tar").write_bytes(b"")
    (tmp_path / "c.yaml").write_text("imagenet: data.tar\n")
    with pytest.raises(UserInputError, match=r"data\.tar \(from key 'imagenet' of .*c\.yaml\) is a file, not a folder"):
        dataset_path("imagenet", tmp_path / "c.yaml")
    with pytest.raises(UserInputError, match=r"data\.tar \(from the command line\) is a file"):
        dataset_path("imagenet", override=tmp_path / "data.tar")


def test_a_misspelt_key_is_pointed_at(tmp_path):
    (tmp_path / "c.yaml").write_text("imagenet-c: /data/imagenet-c\n")
    with pytest.raises(UserInputError, match=r"key 'imagenetc' is missing from .*c\.yaml \(it has 'imagenet-c': a typo\?\)"):
        dataset_path("imagenetc", tmp_path / "c.yaml")


def test_home_and_environment_variables_are_expanded(tmp_path, monkeypatch):
    (tmp_path / "inet").mkdir()
    monkeypatch.setenv("SYMPIE_TEST_DATA", str(tmp_path))
    (tmp_path / "c.yaml").write_text("imagenet: $SYMPIE_TEST_DATA/inet\nacdc: ${SYMPIE_TEST_DATA}/acdc\n")
    assert load_paths(tmp_path / "c.yaml") == {"imagenet": tmp_path / "inet", "acdc": tmp_path / "acdc"}

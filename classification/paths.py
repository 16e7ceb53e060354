"""Dataset locations from ``config_paths.yaml`` (shared by classification and segmentation).

The file maps the keys in :data:`DATASET_KEYS` to folders. Relative paths resolve against the YAML's
own folder; ``~`` and environment variables (``$DATA/imagenet``) are expanded. ``--config PATH`` (see
:func:`add_config_argument`) or the ``SYMPIE_CONFIG`` environment variable select another file. Values
that still hold the shipped ``/path/to/...`` placeholder count as unset: a command that needs one stops
with a sentence naming the key and the file.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
from pathlib import Path

import yaml

from classification.errors import UserInputError
from classification.textfile import read_text

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config_paths.yaml"
ENV_VAR = "SYMPIE_CONFIG"
PLACEHOLDER_PREFIX = "/path/to"
DATASET_KEYS = (
    "imagenet",
    "imagenetc",
    "imagenetc-bar",
    "imagenetc-mixed",
    "vizwiz",
    "cityscapes",
    "acdc",
    "darkzurich",
)


def config_file(config: str | os.PathLike | None = None) -> Path:
    """The YAML in force: ``config`` if given, else ``$SYMPIE_CONFIG``, else the repository's own."""
    chosen = config or os.environ.get(ENV_VAR) or DEFAULT_CONFIG
    return Path(chosen).expanduser().resolve()


def load_paths(config: str | os.PathLike | None = None) -> dict[str, Path | None]:
    """Every key of the YAML as an absolute path; placeholders and empty values become ``None``."""
    path = config_file(config)
    if not path.exists():
        raise UserInputError(f"config file {path} does not exist; pass --config PATH or set {ENV_VAR}.")
    try:
        raw = yaml.load(read_text(path, "config file"), Loader=UniqueKeyLoader) or {}
    except DuplicateKeyError as err:
        raise UserInputError(f"config file {path} sets the key '{err.key}' twice (lines {err.first} and {err.second}); "
                             f"keep the one you mean.") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"config file {path} is not valid YAML ({yaml_problem(err)}); fix it (indent with "
                             f"spaces, not tabs) or pass --config.") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"config file {path} must map dataset keys to paths, e.g. 'imagenet: /data/train'.")
    resolved: dict[str, Path | None] = {}
    for key, value in raw.items():
        if isinstance(value, (list, dict, bool)):
            raise UserInputError(f"key '{key}' in {path} holds {value!r}, not a folder path; write "
                                 f"'{key}: /your/path' (quote paths that YAML would read otherwise).")
        if value is None or str(value).strip() == "" or str(value).startswith(PLACEHOLDER_PREFIX):
            resolved[str(key)] = None
            continue
        p = Path(os.path.expandvars(str(value))).expanduser()  # '$DATA/imagenet' and '~/data' as a shell reads them
        resolved[str(key)] = p if p.is_absolute() else (path.parent / p).resolve()
    return resolved


def dataset_path(key: str, config: str | os.PathLike | None = None, override: str | os.PathLike | None = None,
                 must_exist: bool = True) -> Path:
    """Folder of dataset ``key``; ``override`` (a command-line flag) wins over the YAML."""
    if override:
        path = Path(override).expanduser().resolve()
        source = "the command line"
    else:
        paths = load_paths(config)
        if key not in paths:
            close = difflib.get_close_matches(key, list(paths), n=1)
            typo = f" (it has '{close[0]}': a typo?)" if close else ""
            raise UserInputError(f"key '{key}' is missing from {config_file(config)}{typo}; add '{key}: /your/path'.")
        if paths[key] is None:
            raise UserInputError(
                f"key '{key}' in {config_file(config)} is not set (placeholder or empty); "
                f"put the dataset folder there (layouts: data/README.md).")
        path = paths[key]
        source = f"key '{key}' of {config_file(config)}"
    if must_exist and not path.exists():
        unset = unset_variables(str(path)) if not override else []
        if unset:
            raise UserInputError(f"{source} uses the environment variable ${unset[0]}, which is not set in this "
                                 f"shell; export {unset[0]}=/your/folder or write the path out.")
        raise UserInputError(f"{path} (from {source}) does not exist; fix the path or download the dataset.")
    if must_exist and not path.is_dir():
        raise UserInputError(f"{path} (from {source}) is a file, not a folder; give the dataset's folder.")
    return path


VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def unset_variables(text: str) -> list[str]:
    """The names of ``$NAME`` / ``${NAME}`` in ``text`` that are not set in the environment (expandvars leaves
    them as they are)."""
    return [a or b for a, b in VARIABLE.findall(text) if (a or b) not in os.environ]


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: object, first: int, second: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.second = key, first, second


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error (PyYAML keeps the
    last one in silence)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep)


def yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's several-line message in one line: the problem and where it is."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}".replace("\t", "\\t")


def configured(key: str, config: str | os.PathLike | None = None) -> Path | None:
    """The folder of ``key`` if it is set and exists, else ``None`` (for optional steps)."""
    try:
        return dataset_path(key, config)
    except UserInputError:
        return None


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config PATH``: the dataset YAML (default ``$SYMPIE_CONFIG`` or the repository's)."""
    parser.add_argument("--config", default=None,
                        help=f"dataset paths YAML (default: ${ENV_VAR} or {DEFAULT_CONFIG.name} in the repository)")

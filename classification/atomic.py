"""Atomic output: write to a temporary file (or folder) beside the target, then rename it into place.

A killed run therefore never leaves a truncated JSON grid, checkpoint, image or half-rendered folder behind.
Files are created with the permissions ``open`` would give them (0666 less the umask), folders 0777 less
the umask.

Output locations are checked before the long work (:func:`check_output_dir`, :func:`check_output_file`):
missing folders are created, with their parents, when the first file is written; a file in the way or a
folder that cannot be written, and an empty name (``--out ''``, which would mean the current folder), are
refused in one sentence. A full disk or exhausted quota while writing is one sentence too, the temporary files
removed and the previous content of the targets unchanged.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from classification.errors import DISK_FULL, UserInputError


def umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, staging: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (or in the folder ``staging``, on the same file system); on
    success it replaces ``path``, on error it is removed. A full disk is one sentence (:func:`disk_full`)."""
    with atomic_paths([path], staging) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike], staging: str | os.PathLike | None = None) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together (a grid and its metadata): yield one temporary path
    per target; only when all of them are written are they renamed into place, in order. If the disk fills up
    or the run is stopped while they are written, every target keeps its previous content."""
    targets = [Path(path) for path in paths]
    temporaries: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            folder = target.parent
            if staging is not None:
                folder = Path(staging)
                folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=folder)
            temporaries.append(Path(tmp))
            os.fchmod(fd, 0o666 & ~umask())
            os.close(fd)
        yield list(temporaries)
        for tmp, target in zip(temporaries, targets):
            os.replace(tmp, target)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full(err, targets[0]) from None
        raise
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def disk_full(err: OSError, target: Path) -> UserInputError:
    """The sentence for ENOSPC/EDQUOT while ``target`` was written (its previous content is unchanged)."""
    return UserInputError(f"{target} could not be written: {err.strerror} in {target.parent}; free some space or "
                          f"choose another output folder, then run again (finished files are kept, {target.name} "
                          f"is unchanged).")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder next to ``path`` to fill; on success it is renamed to ``path``.

    ``path`` must not exist yet (remove an outdated one first). If it appears meanwhile (another process
    made the same folder and renamed it first), that one is kept and this copy dropped. The temporary
    folder is removed in every case.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~umask())
    try:
        yield staging
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _first_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _non_empty(path: str | os.PathLike, what: str, kind: str) -> Path:
    if not str(path).strip():  # Path('') is '.': the current folder, surely not what was meant
        raise UserInputError(f"{what} is empty; pass a {kind} name.")
    return Path(path).expanduser()


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Refuse, in one sentence naming ``what`` (e.g. "--out"), an output folder that is a file, lies under a
    file or cannot be written (probed with a temporary file). Missing folders are fine: they are created
    when written to. Returns the path."""
    path = _non_empty(path, what, "folder")
    existing = _first_existing(path)
    if not existing.is_dir():
        if existing == path:
            raise UserInputError(f"{what} {path} is a file, not a folder; pass a folder (it is created if missing).")
        raise UserInputError(f"{what} {path} cannot be created because {existing} is a file; pass another folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f"{what} {path} cannot be written ({err.strerror} in {existing}); pass a folder you "
                             f"can write to.") from None
    return path


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """:func:`check_output_dir` for the folder of an output file, which itself must not be a folder."""
    path = _non_empty(path, what, "file")
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder, not a file; pass a file name.")
    try:
        check_output_dir(path.parent, what)
    except UserInputError:
        existing = _first_existing(path.parent)
        reason = "is a file" if not existing.is_dir() else "cannot be written"
        raise UserInputError(f"{what} {path} cannot be written: {existing} {reason}; pass another path.") from None
    return path


def write_json(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """``json.dump`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, **dump_kwargs))

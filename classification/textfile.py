"""Reading the text files users hand in (config YAML, split files, annotation CSV/JSON): UTF-8, with or
without a byte-order mark, any line ending; anything else is one sentence naming the file (and the line)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from classification.errors import UserInputError


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped). ``what`` names the
    file in the message ("split file", "config file"...)."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UserInputError(f"{what} {path} is a folder, not a file; pass the file itself.") from None
    except OSError as err:
        raise UserInputError(f"{what} {path} cannot be read ({err.strerror}); check that it exists and that you "
                             f"may read it.") from None
    binary = binary_kind(data)
    if binary is not None:
        raise UserInputError(f"{what} {path} is {binary}, not a text file; pass the {what} itself.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserInputError(f"{what} {path} is not UTF-8 text (line {line} holds the byte 0x{data[err.start]:02x}); "
                             f"save it as UTF-8.") from None


MAGIC_NUMBERS = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"), (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"), (b"\x80", "a pickle (a PyTorch checkpoint?)"),
)


def binary_kind(data: bytes) -> str | None:
    """What a binary file is ("a PNG image"...) from its first bytes; "a binary file" for other data holding NUL
    bytes (never in text); None for text."""
    for magic, kind in MAGIC_NUMBERS:
        if data.startswith(magic):
            return kind
    return "a binary file" if b"\0" in data[:8192] else None


def read_json(path: str | os.PathLike, what: str = "file", advice: str = "fix or replace it") -> Any:
    """The JSON value in ``path`` (UTF-8, with or without a byte-order mark); invalid JSON is one sentence
    naming the file, the line and column, and ``advice``."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        problem = "is empty" if not text.strip() else f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        raise UserInputError(f"{what} {path} {problem}; {advice}.") from None

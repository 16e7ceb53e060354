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
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserInputError(f"{what} {path} is not UTF-8 text (line {line} holds the byte 0x{data[err.start]:02x}); "
                             f"save it as UTF-8.") from None


def read_json(path: str | os.PathLike, what: str = "file", advice: str = "fix or replace it") -> Any:
    """The JSON value in ``path`` (UTF-8, with or without a byte-order mark); invalid JSON is one sentence
    naming the file, the line and column, and ``advice``."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        problem = "is empty" if not text.strip() else f"is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        raise UserInputError(f"{what} {path} {problem}; {advice}.") from None

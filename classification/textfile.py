"""Reading the text files users hand in (config YAML, split files, annotation CSVs): UTF-8, with or
without a byte-order mark; anything else is one sentence naming the file and the line."""
from __future__ import annotations

import os
from pathlib import Path

from classification.errors import UserInputError


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped). ``what`` names the
    file in the message ("split file", "config file"...)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserInputError(f"{what} {path} is not UTF-8 text (line {line} holds the byte 0x{data[err.start]:02x}); "
                             f"save it as UTF-8.") from None

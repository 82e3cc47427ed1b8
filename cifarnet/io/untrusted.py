"""Text from files the tool reads (checkpoints, ONNX metadata, config files, dataset pickles, file
names, environment variables) made safe to show and to store.

- `printable(text)`: for the terminal. Escape sequences (ANSI colours and cursor moves, OSC
  titles and hyperlinks) are removed whole; every other control character (carriage return,
  newline, tab, backspace, the C1 range, bidirectional overrides, line separators) becomes
  `?`; bytes of a file name that are not UTF-8 are shown as U+FFFD.
- `csv_cell(value)`: for a CSV cell. A text cell that a spreadsheet would read as a formula
  (starting with = + - @, a tab or a carriage return) gets a leading `'`, as OWASP's
  CSV-injection guidance advises. A file name that is not UTF-8 keeps its own bytes (the CSV
  writer writes them back as they were), so the row names the file exactly.
- `has_control(text)`: whether `printable` would change anything but undecodable bytes.
"""

from __future__ import annotations

import re
from typing import Any

# ESC [ ... final byte (CSI), ESC ] ... BEL or ESC \ (OSC: titles, hyperlinks), ESC P/X/^/_
# ... ESC \ (DCS, SOS, PM, APC), and the two-byte ESC sequences
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
)
# C0, DEL, C1, the line and paragraph separators, bidirectional embeddings, overrides and
# isolates, and the zero-width marks that reorder or hide text
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def printable(text: Any) -> str:
    """`text` (any value, as str) as one line a terminal shows as it reads: see the module
    docstring."""
    text = str(text)
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = _CONTROL.sub("?", text)
    return _utf8(text).decode("utf-8", "replace")


def has_control(text: str) -> bool:
    """True when `text` holds an escape sequence or a control character."""
    return bool(_ESCAPE_SEQUENCE.search(text) or _CONTROL.search(text))


def csv_cell(value: Any) -> Any:
    """`value` as a CSV cell no spreadsheet runs: see the module docstring. Numbers and other
    non-text values are returned as they are."""
    if not isinstance(value, str):
        return value
    return "'" + value if value.startswith(_FORMULA_START) else value


def _utf8(text: str) -> bytes:
    """`text` in UTF-8, the bytes of a file name that were not UTF-8 (which Python holds as
    surrogates) as they were; any other lone surrogate as a `\\udXXX` escape."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")

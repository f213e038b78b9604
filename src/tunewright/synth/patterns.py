"""Question and answer patterns of the grounded builders: ``str.format`` strings over a row's columns."""

from __future__ import annotations

import string


def placeholders(pattern: str) -> set[str]:
    """The ``{names}`` a pattern fills (``{{`` escapes and the text between are not names)."""
    return {name for _, name, _, _ in string.Formatter().parse(pattern) if name}

"""The report's content as a list of plain blocks, rendered to Markdown and to HTML alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "text"  # "text" | "note" (a caveat the reader must not miss)


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    numeric: tuple[bool, ...] = field(default=())  # right-align these columns; default: all but the first

    def aligned_right(self) -> tuple[bool, ...]:
        return self.numeric or (False, *([True] * (len(self.columns) - 1)))


@dataclass(frozen=True)
class Figures:
    """Images side by side: (file path relative to the report folder, caption)."""

    images: tuple[tuple[Path, str], ...]


Block = Heading | Paragraph | Bullets | Table | Figures

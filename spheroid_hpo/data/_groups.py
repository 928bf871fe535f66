"""Groups of images that must stay in one split: from a regex on the file name, or from a CSV."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from spheroid_hpo.errors import InputError

if TYPE_CHECKING:
    from spheroid_hpo.data._folder import LabeledFile

from spheroid_hpo.data._split import _GROUP_EXAMPLE

# --------------------------------------------------------------------------- groups


def compile_group_pattern(pattern: str) -> re.Pattern:
    """``pattern`` compiled, or InputError unless it is a valid regex with a capture group."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InputError(
            f"group pattern '{pattern}' is not a valid regular expression ({error}); "
            f"fix it, e.g. {_GROUP_EXAMPLE}"
        ) from None
    if regex.groups < 1:
        raise InputError(
            f"group pattern '{pattern}' has no capture group; put the part of the file name "
            f"that names the group in parentheses, e.g. {_GROUP_EXAMPLE}"
        )
    return regex


def groups_from_regex(files: Sequence[LabeledFile], pattern: str) -> list[str]:
    """Group of each file: the first capture group of ``re.search(pattern, file name)``.

    For patches named like ``sph12_003.png``, the pattern ``(sph\\d+)_`` groups them by spheroid.
    """
    regex = compile_group_pattern(pattern)
    groups: list[str] = []
    unmatched: list[str] = []
    for file in files:
        match = regex.search(PurePosixPath(file.path).name)
        group = match.group(1) if match else None
        if group:
            groups.append(group)
        else:
            unmatched.append(file.path)
    if unmatched:
        others = _and_others(len(unmatched) - 1, "file")
        raise InputError(
            f"group pattern '{pattern}' finds no group in the file name "
            f"'{PurePosixPath(unmatched[0]).name}' of {unmatched[0]}{others}; change the "
            f"pattern so that its first capture group matches part of every file name"
        )
    return groups


def _and_others(count: int, noun: str) -> str:
    if count == 0:
        return ""
    return f" (and {count} other {noun}{'s' if count > 1 else ''})"


def _normalize_path(path: str) -> str:
    # Group files are often made on Windows or by hand: tolerate '\', './' and spaces.
    return PurePosixPath(path.strip().replace("\\", "/")).as_posix()


def groups_from_csv(files: Sequence[LabeledFile], csv_path: str | os.PathLike) -> list[str]:
    """Group of each file from a CSV with columns ``path,group`` (paths relative to the data
    root). Extra rows for files that are not in ``files`` are ignored."""
    csv_path = Path(csv_path)
    fix = "pass a CSV with columns path,group and one row per image (path relative to the data folder)"
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in ("path", "group") if name not in columns]
            if missing:
                raise InputError(
                    f"groups file {csv_path} has columns {columns} and lacks {missing}; {fix}"
                )
            group_of: dict[str, str] = {}
            for line, raw in enumerate(reader, start=2):
                row = {key.strip(): (value or "").strip() for key, value in raw.items() if key}
                path, group = _normalize_path(row["path"]), row["group"]
                if not group:
                    raise InputError(f"groups file {csv_path} line {line} ({path}) has no group; {fix}")
                if group_of.setdefault(path, group) != group:
                    raise InputError(
                        f"groups file {csv_path} gives {path} two groups, '{group_of[path]}' "
                        f"and '{group}' (line {line}); keep one row per image"
                    )
    except FileNotFoundError:
        raise InputError(f"groups file {csv_path} does not exist; {fix}") from None
    except UnicodeDecodeError:
        raise InputError(f"groups file {csv_path} is not a UTF-8 text file; {fix}") from None

    unlisted = [file.path for file in files if file.path not in group_of]
    if unlisted:
        others = _and_others(len(unlisted) - 1, "image")
        raise InputError(f"groups file {csv_path} has no row for {unlisted[0]}{others}; {fix}")
    return [group_of[file.path] for file in files]



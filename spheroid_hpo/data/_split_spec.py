"""How a data folder is split: one typed setting read the same way by every command.

``train`` options, a study file's ``[data]`` table (so ``create`` and ``launch``), ``best.toml``'s
``[data]`` and ``reproduce`` all build a ``SplitSpec``; its keys, defaults and validation live
here once. TOML and command-line names are the same words: ``split_seed``/``--split-seed``,
``fractions``/``--fractions``, ``group_by``/``--group-by``, ``groups_csv``/``--groups-csv``,
``split_manifest``/``--split-manifest`` and ``near_duplicates``/``--near-duplicates``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

from spheroid_hpo.data._groups import compile_group_pattern
from spheroid_hpo.data._split import FRACTIONS_RULE, validate_fractions
from spheroid_hpo.defaults import NEAR_DUPLICATES, SPLIT_FRACTIONS, SPLIT_SEED
from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable, toml_value

# What happens to near-duplicate images (re-saved, resized or slightly brighter copies) when a
# new split is made. Exact duplicates and the user's groups always share a split.
NEAR_DUPLICATE_POLICIES: dict[str, str] = {
    "together": "near-duplicates share a split; when that leaves no stratified split, only exact "
                "duplicates and your groups are kept together, with one line saying so",
    "apart": "near-duplicates may land in different splits (test scores may be inflated)",
}
SPLIT_KEYS = ("split_seed", "fractions", "group_by", "groups_csv", "split_manifest", "near_duplicates")
MAX_SPLIT_SEED = 2**32 - 1


@dataclass(frozen=True)
class SplitSpec:
    """The split settings, validated when made (every entry point refuses the same values).

    ``manifest`` None means ``DATA/splits.csv``; an existing manifest is reused as it is, and
    the other settings then only matter for a new one.
    """

    seed: int = SPLIT_SEED
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    group_by: str | None = None
    groups_csv: str | None = None
    manifest: str | None = None
    near_duplicates: str = NEAR_DUPLICATES

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) \
                or not 0 <= self.seed <= MAX_SPLIT_SEED:
            raise InputError(f"split_seed must be a whole number from 0 to {MAX_SPLIT_SEED}, but got "
                             f"{self.seed!r}; pass e.g. 0")
        object.__setattr__(self, "fractions", validate_fractions(self.fractions))
        if self.group_by is not None and self.groups_csv is not None:
            raise InputError(
                f"both a group pattern ({self.group_by!r}) and a groups file ({self.groups_csv}) were "
                f"given; pass only one of group_by (--group-by) and groups_csv (--groups-csv)"
            )
        if self.group_by is not None:
            compile_group_pattern(self.group_by)
        for name in ("groups_csv", "manifest"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(value))
        if self.near_duplicates not in NEAR_DUPLICATE_POLICIES:
            raise InputError(
                f"near_duplicates is {self.near_duplicates!r}; choose one of: "
                f"{', '.join(NEAR_DUPLICATE_POLICIES)} (" + "; ".join(
                    f"{name}: {text}" for name, text in NEAR_DUPLICATE_POLICIES.items()) + ")"
            )

    @property
    def grouped(self) -> bool:
        """Whether the user gave groups (a pattern or a CSV)."""
        return self.group_by is not None or self.groups_csv is not None

    @classmethod
    def from_table(cls, table: TomlTable) -> SplitSpec:
        """The split keys of a ``[data]`` table (the caller checks the table's other keys)."""
        fractions = table.checked("fractions", list, validate_fractions, FRACTIONS_RULE, list(SPLIT_FRACTIONS))
        near = table.choice("near_duplicates", tuple(NEAR_DUPLICATE_POLICIES), NEAR_DUPLICATES)
        try:
            return cls(
                seed=table.positive("split_seed", int, SPLIT_SEED, minimum=0, maximum=MAX_SPLIT_SEED),
                fractions=fractions,
                group_by=table.get("group_by", str, None),
                groups_csv=table.get("groups_csv", str, None),
                manifest=table.get("split_manifest", str, None),
                near_duplicates=near,
            )
        except InputError as error:
            raise InputError(f"{table.source}: [{table.where}] {error}") from None

    @classmethod
    def from_dict(cls, raw: dict) -> SplitSpec:
        """The inverse of ``as_dict`` (a run's metrics.json config)."""
        return cls(seed=raw["split_seed"], fractions=tuple(raw["fractions"]), group_by=raw.get("group_by"),
                   groups_csv=raw.get("groups_csv"), manifest=raw.get("split_manifest"),
                   near_duplicates=raw.get("near_duplicates", NEAR_DUPLICATES))

    def toml_lines(self) -> list[str]:
        """The ``[data]`` lines that give this spec back through ``from_table``."""
        lines = [f"split_seed = {self.seed}", f"fractions = {toml_value(list(self.fractions))}"]
        for key, value in (("group_by", self.group_by), ("groups_csv", self.groups_csv),
                           ("split_manifest", self.manifest)):
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        lines.append(f'near_duplicates = "{self.near_duplicates}"')
        return lines

    def as_dict(self) -> dict:
        """The JSON-able form recorded in metrics.json and on a study."""
        return {"split_seed": self.seed, "fractions": list(self.fractions), "group_by": self.group_by,
                "groups_csv": self.groups_csv, "split_manifest": self.manifest,
                "near_duplicates": self.near_duplicates}


def parse_fractions(text: str) -> tuple[float, ...]:
    """Fractions written on a command line (``0.7,0.15,0.15``), validated."""
    try:
        values: Sequence[float] = [float(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--fractions {text!r} must be {FRACTIONS_RULE}, e.g. 0.7,0.15,0.15") from None
    if not all(math.isfinite(value) for value in values):
        raise InputError(f"--fractions {text!r} must be {FRACTIONS_RULE}, e.g. 0.7,0.15,0.15")
    return validate_fractions(values)



DEFAULT_SPLIT = SplitSpec()  # every default above; frozen, so one instance serves every caller

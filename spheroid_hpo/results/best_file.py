"""The winning configuration as a small TOML file (``best.toml``): its schema, writer and reader.

A best.toml holds what a retraining needs (architecture, hyperparameters, image
size, seed, precision, the data or the demo generator's settings, how the split
was drawn, with its fingerprint) and what it must land on: the validation and
test macro-F1 of the winning configuration retrained with K seeds on the machine
described in ``[machine]``, and the original trial's own scores.
``spheroid_hpo.results.reproduce`` writes it (``export_best``) and checks it (``reproduce``).
"""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable
from spheroid_hpo.training.architectures import architecture_names
from spheroid_hpo.training.hyperparams import CATEGORICAL_VALUES, PARAM_BOUNDS, TUNABLE_PARAMS
from spheroid_hpo.training.machine import KERNEL_FLAGS, MachineFingerprint

DEFAULT_SEEDS = 5  # retrainings export-best records: enough for a spread, ~4 min on 2 cores for studies/ci.toml
Z = 3.0  # band width in standard errors of the difference of two means
MIN_BAND = 0.05  # and never narrower: a few changed predictions on a ~60-image split
SCORES = ("val_macro_f1", "test_macro_f1")
_FIX = "; fix it or export the file again with export-best"

RULE_TEXT = (
    "Rule (spheroid-hpo reproduce): on a machine whose [machine] fingerprint matches, the first seed is "
    "retrained and must give exactly its recorded scores. Otherwise, or if it does not, n of the seeds "
    f"(all, or --seeds n) are retrained, and for each score the mean obtained must lie within the mean "
    f"recorded for the same seeds +- max({Z:g} * sd * sqrt(2 / n), {MIN_BAND:g}), sd being the spread recorded "
    "over all seeds."
)


@dataclass(frozen=True)
class SeedScores:
    """One score (validation or test macro-F1) of the winning configuration retrained with each seed."""

    per_seed: tuple[float, ...]
    original: float  # the study's trial, as it ran

    @property
    def mean(self) -> float:
        """The mean over the recorded seeds."""
        return statistics.fmean(self.per_seed)

    @property
    def sd(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed)."""
        return statistics.stdev(self.per_seed) if len(self.per_seed) > 1 else 0.0

    def half_width(self, n: int) -> float:
        """Half-width of the band for the mean of ``n`` retrained seeds (the rule in RULE_TEXT)."""
        return max(Z * self.sd * math.sqrt(2 / n), MIN_BAND)


@dataclass(frozen=True)
class BestConfig:
    """Everything needed to retrain a study's winning trial and check the result."""

    study: str
    architecture: str
    trial: int
    params: dict[str, float]
    image_size: int
    precision: str
    weights: str
    data_path: str | None  # None: the generated demo data set
    demo: dict[str, int] | None
    split_seed: int
    fractions: tuple[float, float, float]
    group_by: str | None
    fingerprint: str
    machine: MachineFingerprint  # where the seeds were retrained
    seeds: tuple[int, ...]  # the first is the study's own training seed
    val: SeedScores
    test: SeedScores
    # The study's [data] cv_folds: its trial's value was a mean over folds (the retrainings
    # here train once on the train split, like the seeds' expected scores below).
    cv_folds: int | None = None

    @property
    def seed(self) -> int:
        """The training seed of the study's trial."""
        return self.seeds[0]

    def scores(self) -> dict[str, SeedScores]:
        """Each recorded metric's per-seed scores, by metric name."""
        return {"val_macro_f1": self.val, "test_macro_f1": self.test}

    def to_toml(self) -> str:
        """The best.toml text (comments explain each section)."""
        lines = [
            f"# The best configuration of study {self.study!r} over all its architectures, by validation macro-F1.",
            "# Retrain it and compare with:  spheroid-hpo reproduce THIS_FILE",
            *(f"# {line}" for line in _wrap(RULE_TEXT)),
            "",
            "[best]",
            f"study = {_toml(self.study)}",
            f"architecture = {_toml(self.architecture)}",
            f"trial = {self.trial}",
            "",
            "[params]",
            *(f"{name} = {_toml(value)}" for name, value in self.params.items()),
            "",
            "[training]",
            f"precision = {_toml(self.precision)}",
            f"weights = {_toml(self.weights)}",
            "",
            "[data]",
        ]
        if self.data_path is not None:
            lines.append(f"path = {_toml(self.data_path)}")
        lines += [
            f"image_size = {self.image_size}",
            f"split_seed = {self.split_seed}",
            f"fractions = [{', '.join(_toml(f) for f in self.fractions)}]",
        ]
        if self.group_by is not None:
            lines.append(f"group_by = {_toml(self.group_by)}")
        if self.cv_folds is not None:
            lines.append(f"cv_folds = {self.cv_folds}  # the trial's value is its mean over these folds")
        lines.append(f"fingerprint = {_toml(self.fingerprint)}  # of the split and the files: refuses other data")
        if self.demo is not None:
            lines += ["", "[data.demo]  # the generated demo data set, rebuilt byte for byte from these settings",
                      *(f"{key} = {value}" for key, value in self.demo.items())]
        lines += ["", "[machine]  # where the seeds below were retrained; exact results need an identical one",
                  *(f"{key} = {_toml(value)}" for key, value in self.machine.as_dict().items())]
        lines += ["", "[expected]", f"seeds = {_toml(list(self.seeds))}"]
        for name, scores in self.scores().items():
            lines += [
                "", f"[expected.{name}]",
                f"per_seed = {_toml(list(scores.per_seed))}",
                f"mean = {_toml(scores.mean)}",
                f"sd = {_toml(scores.sd)}",
                f"min = {_toml(min(scores.per_seed))}",
                f"max = {_toml(max(scores.per_seed))}",
                f"original = {_toml(scores.original)}  # the study's trial, as it ran",
            ]
        return "\n".join(lines) + "\n"


def read_best_config(path: Path) -> BestConfig:
    """Parse and validate a best.toml; InputError naming the file, the key and the fix."""
    from spheroid_hpo.data.demo import validated_demo_settings

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; write one with `spheroid-hpo export-best --study NAME > {path}`")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"{path} is not a readable TOML file: {error}") from error
    doc = TomlTable(raw, "", path, fix=_FIX)
    doc.check_keys((), required=("best", "params", "training", "data", "machine", "expected"))
    best = doc.table("best")
    best.check_keys((), required=("study", "architecture", "trial"))
    params = doc.table("params")
    params.check_keys(("bn_momentum", "class_weights"), required=("epochs", "lr", "rotation", "batch_size"))
    training = doc.table("training")
    training.check_keys(("precision", "weights"), required=())
    data = doc.table("data")
    data.check_keys(("path", "group_by", "demo", "cv_folds"),
                    required=("image_size", "split_seed", "fractions", "fingerprint"))

    architecture = best.get("architecture", str)
    if architecture not in architecture_names():
        raise best.error("architecture", f"is {architecture!r}; use one of {', '.join(architecture_names())}")
    demo = None
    if data.get("path", str, None) is None:
        if "demo" not in data.raw:
            raise data.error("", "needs either path = \"DATA FOLDER\" or a [data.demo] table")
        section = data.table("demo")
        section.check_keys((), required=("per_class", "size", "seed"))
        try:  # bounded before anything is generated: a file from elsewhere must not fill the disk
            demo = validated_demo_settings(**{key: section.get(key, int) for key in ("per_class", "size", "seed")})
        except InputError as error:
            raise section.error("", f"is refused: {error}") from error
    fractions = data.get("fractions", list)
    if len(fractions) != 3 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and f > 0
                                      for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise data.error("fractions", f"must be three positive numbers (train, val, test) summing to 1, "
                                      f"but got {fractions!r}")
    seeds, val, test = _read_expected(doc.table("expected"))
    return BestConfig(
        study=best.get("study", str),
        architecture=architecture,
        trial=best.get("trial", int),
        params={name: params.choice(name, CATEGORICAL_VALUES[name]) if name in CATEGORICAL_VALUES
                else params.bounded(name, TUNABLE_PARAMS[name], PARAM_BOUNDS[name], param=name)
                for name in params.raw},
        image_size=data.positive("image_size", int),
        precision=training.get("precision", str, "auto"),
        weights=training.get("weights", str, "none"),
        data_path=data.get("path", str, None),
        demo=demo,
        split_seed=data.get("split_seed", int),
        fractions=tuple(float(f) for f in fractions),
        group_by=data.get("group_by", str, None),
        cv_folds=data.get("cv_folds", int, None),
        fingerprint=data.get("fingerprint", str),
        machine=_read_machine(doc.table("machine")),
        seeds=seeds,
        val=val,
        test=test,
    )


def _read_machine(section: TomlTable) -> MachineFingerprint:
    section.check_keys((), required=("torch", "device", "cpu", "cpu_flags", "aten_capability", "gpu", "gpu_driver",
                                     "threads", "precision"))
    flags = section.get("cpu_flags", list)
    if not all(flag in KERNEL_FLAGS for flag in flags):
        raise section.error("cpu_flags", f"must list flags among {', '.join(KERNEL_FLAGS)}, but got {flags!r}")
    strings = {key: section.get(key, str) for key in ("torch", "device", "cpu", "aten_capability", "gpu",
                                                         "gpu_driver", "precision")}
    return MachineFingerprint(**strings, cpu_flags=tuple(flags), threads=section.positive("threads", int))


def _read_expected(section: TomlTable) -> tuple[tuple[int, ...], SeedScores, SeedScores]:
    section.check_keys((), required=("seeds", *SCORES))
    seeds = section.get("seeds", list)
    if not seeds or len(set(seeds)) != len(seeds) or not all(type(s) is int and s >= 0 for s in seeds):
        raise section.error("seeds", f"must be distinct non-negative integers, but got {seeds!r}")
    scores = []
    for name in SCORES:
        table = section.table(name)
        table.check_keys((), required=("per_seed", "mean", "sd", "min", "max", "original"))
        per_seed = table.get("per_seed", list)
        if len(per_seed) != len(seeds) or not all(isinstance(v, float) and 0 <= v <= 1 for v in per_seed):
            raise table.error("per_seed", f"must hold one score in [0, 1] per seed ({len(seeds)}), "
                                          f"but got {per_seed!r}")
        score = SeedScores(per_seed=tuple(per_seed), original=table.positive("original", float, minimum=0, maximum=1))
        # The summary is for people; it must agree with the scores it summarises.
        for key, derived in (("mean", score.mean), ("sd", score.sd), ("min", min(per_seed)), ("max", max(per_seed))):
            if not math.isclose(table.get(key, float), derived, abs_tol=1e-9):
                raise table.error(key, f"is {table.get(key, float)!r} but per_seed gives {derived!r}")
        scores.append(score)
    return tuple(seeds), scores[0], scores[1]


def _wrap(text: str, width: int = 100) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr round-trips exactly, so the retraining uses the very learning rate the trial used.
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_toml(item) for item in value)}]"
    # TOML basic strings take JSON's escapes.
    return json.dumps(str(value), ensure_ascii=False)

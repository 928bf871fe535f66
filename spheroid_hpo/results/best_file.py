"""The winning configuration as a small TOML file (``best.toml``): its schema, writer and reader.

A best.toml holds what a retraining needs (architecture, hyperparameters, image
size, seed, precision, the data or the demo generator's settings, how the split
was drawn, with its fingerprint) and what it must land on: the validation and
test macro-F1 of the winning configuration retrained with K seeds on the machine
described in ``[machine]``, and the original trial's own scores.
``spheroid_hpo.results.reproduce`` writes it (``export_best``) and checks it (``reproduce``).
"""

from __future__ import annotations

import math
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

from spheroid_hpo.data import SPLIT_KEYS, SplitSpec
from spheroid_hpo.defaults import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable, toml_value
from spheroid_hpo.training.architectures import architecture_names
from spheroid_hpo.training.hyperparams import REQUIRED_PARAMS, TUNABLE_PARAMS, read_param
from spheroid_hpo.training.machine import KERNEL_FLAGS, MachineFingerprint
from spheroid_hpo.training.settings import TrainingSettings

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
    split: SplitSpec  # drawn afresh by reproduce (or read, when it names a split_manifest)
    fingerprint: str
    machine: MachineFingerprint  # where the seeds were retrained
    seeds: tuple[int, ...]  # the first is the study's own training seed
    val: SeedScores
    test: SeedScores
    # The study's [data] cv_folds: its trial's value was a mean over folds, and each retraining
    # (export-best's seeds, reproduce) trains the same folds, so the expected scores are such means.
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
            f"study = {toml_value(self.study)}",
            f"architecture = {toml_value(self.architecture)}",
            f"trial = {self.trial}",
            "",
            "[params]",
            *(f"{name} = {toml_value(value)}" for name, value in self.params.items()),
            "",
            "[training]",
            f"precision = {toml_value(self.precision)}",
            f"weights = {toml_value(self.weights)}",
            "",
            "[data]",
        ]
        if self.data_path is not None:
            lines.append(f"path = {toml_value(self.data_path)}")
        lines += [f"image_size = {self.image_size}", *self.split.toml_lines()]
        if self.cv_folds is not None:
            lines.append(f"cv_folds = {self.cv_folds}  # the trial's value is its mean over these folds")
        lines.append(f"fingerprint = {toml_value(self.fingerprint)}  # of the split and the files: refuses other data")
        if self.demo is not None:
            lines += ["", "[data.demo]  # the generated demo data set, rebuilt byte for byte from these settings",
                      *(f"{key} = {value}" for key, value in self.demo.items())]
        lines += ["", "[machine]  # where the seeds below were retrained; exact results need an identical one",
                  *(f"{key} = {toml_value(value)}" for key, value in self.machine.as_dict().items())]
        lines += ["", "[expected]", f"seeds = {toml_value(list(self.seeds))}"]
        for name, scores in self.scores().items():
            lines += [
                "", f"[expected.{name}]",
                f"per_seed = {toml_value(list(scores.per_seed))}",
                f"mean = {toml_value(scores.mean)}",
                f"sd = {toml_value(scores.sd)}",
                f"min = {toml_value(min(scores.per_seed))}",
                f"max = {toml_value(max(scores.per_seed))}",
                f"original = {toml_value(scores.original)}  # the study's trial, as it ran",
            ]
        return "\n".join(lines) + "\n"


def read_best_config(path: Path) -> BestConfig:
    """Parse and validate a best.toml; InputError naming the file, the key and the fix."""
    from spheroid_hpo.data.demo import read_demo_settings

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
    params.check_keys(tuple(TUNABLE_PARAMS), required=REQUIRED_PARAMS)
    # The seeds are in [expected]; [training] holds the rest of the settings, read as a study file's are.
    training = TrainingSettings.from_table(doc.table("training"), keys=("precision", "weights"))
    data = doc.table("data")
    data.check_keys(("path", *SPLIT_KEYS, "demo", "cv_folds"),
                    required=("image_size", "split_seed", "fractions", "fingerprint"))

    demo = None
    if data.get("path", str, None) is None:
        if "demo" not in data.raw:
            raise data.error("", "needs either path = \"DATA FOLDER\" or a [data.demo] table")
        # Bounded before anything is generated: a file from elsewhere must not fill the disk.
        demo = read_demo_settings(data.table("demo"))
    seeds, val, test = _read_expected(doc.table("expected"))
    return BestConfig(
        study=best.get("study", str),
        architecture=best.choice("architecture", architecture_names()),
        trial=best.get("trial", int),
        params={name: read_param(params, name, name) for name in params.raw},
        image_size=data.positive("image_size", int, minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE),
        precision=training.precision,
        weights=training.weights,
        data_path=data.get("path", str, None),
        demo=demo,
        split=SplitSpec.from_table(data),
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

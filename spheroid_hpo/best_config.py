"""The winning configuration as a small TOML file: exported from a study, retrained anywhere.

``export_best`` picks the best trial over all architectures (validation macro-F1)
and records what a retraining needs to land on the same numbers: architecture,
hyperparameters, image size, seed, precision, CPU threads, the data (a folder
or the demo generator's settings), how the split was drawn (seed, fractions,
grouping) with its fingerprint, and the validation and test macro-F1 reached.
``reproduce`` retrains it with ``run_training`` on exactly that split and
compares.

Tolerance: on the same kind of CPU with the same thread count, training is
bit-for-bit deterministic and the scores match exactly. Other hardware, another
thread count or another optimizer kernel changes the order of floating-point
work, and training then drifts like a run with another seed (studies/ci.toml
records how far). The tolerance states how far a reproduction may drift and
still count; the default 0.02 keeps the check close to exact.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from spheroid_hpo import engine
from spheroid_hpo.config import TUNABLE_PARAMS
from spheroid_hpo.data import prepare_split
from spheroid_hpo.demo_data import demo_data_dir, ensure_demo_data
from spheroid_hpo.errors import InputError
from spheroid_hpo.models import architecture_names
from spheroid_hpo.report import (
    best_trial,
    download_model,
    evaluate_on_test,
    load_study_data,
    open_family,
    study_data_dir,
    write_study_manifest,
)
from spheroid_hpo.storage import RUNS_DIR, default_artifact_dir, open_artifact_store
from spheroid_hpo.training_run import run_training

DEFAULT_TOLERANCE = 0.02
THREADS_ATTR = "torch_threads"  # recorded on trials by workers that know their thread count


@dataclass(frozen=True)
class BestConfig:
    """Everything needed to retrain a study's winning trial and check the result."""

    study: str
    architecture: str
    trial: int
    trained_on: str  # device type the trial ran on: "cpu" or "cuda"
    params: dict[str, float]
    image_size: int
    seed: int
    precision: str
    weights: str
    threads: int | None  # torch CPU threads the trial trained with; None when unknown
    data_path: str | None  # None: the generated demo data set
    demo: dict[str, int] | None
    split_seed: int
    fractions: tuple[float, float, float]
    group_by: str | None
    fingerprint: str
    val_macro_f1: float
    test_macro_f1: float
    tolerance: float

    def to_toml(self) -> str:
        """The best.toml text (comments explain each section)."""
        lines = [
            f"# The best configuration of study {self.study!r} over all its architectures, by validation macro-F1.",
            "# Retrain it and compare with:  spheroid-hpo reproduce THIS_FILE",
            "",
            "[best]",
            f"study = {_toml(self.study)}",
            f"architecture = {_toml(self.architecture)}",
            f"trial = {self.trial}",
            f"trained_on = {_toml(self.trained_on)}",
            "",
            "[params]",
            *(f"{name} = {_toml(value)}" for name, value in self.params.items()),
            "",
            "[training]",
            f"seed = {self.seed}",
            f"precision = {_toml(self.precision)}",
            f"weights = {_toml(self.weights)}",
        ]
        if self.threads is not None:
            lines.append(f"threads = {self.threads}  # CPU results depend on the thread count")
        lines += ["", "[data]"]
        if self.data_path is not None:
            lines.append(f"path = {_toml(self.data_path)}")
        lines += [
            f"image_size = {self.image_size}",
            f"split_seed = {self.split_seed}",
            f"fractions = [{', '.join(_toml(f) for f in self.fractions)}]",
        ]
        if self.group_by is not None:
            lines.append(f"group_by = {_toml(self.group_by)}")
        lines.append(f"fingerprint = {_toml(self.fingerprint)}  # of the split and the files: refuses other data")
        if self.demo is not None:
            lines += ["", "[data.demo]  # the generated demo data set, rebuilt byte for byte from these settings",
                      *(f"{key} = {value}" for key, value in self.demo.items())]
        lines += [
            "",
            "[expected]",
            f"val_macro_f1 = {_toml(self.val_macro_f1)}",
            f"test_macro_f1 = {_toml(self.test_macro_f1)}",
            f"tolerance = {_toml(self.tolerance)}  # largest |obtained - expected| that counts as reproduced",
            "",
        ]
        return "\n".join(lines)


def export_best(
    *,
    study: str | None,
    storage_url: str | None = None,
    artifact_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    data_dir: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
    device: str = "auto",
) -> BestConfig:
    """The best trial of study ``study`` as a ``BestConfig``, its model scored once on the test split.

    ``threads`` is the CPU thread count the trial trained with, used when the trial
    did not record it.
    """
    if not (0 <= tolerance < 1):
        raise InputError(f"--tolerance must be in [0, 1), but got {tolerance}")
    runs_dir = Path(runs_dir)
    family = open_family(storage_url=storage_url, study=study, runs_dir=runs_dir)
    candidates = [(architecture, best_trial(family.trials(architecture))) for architecture in family.studies]
    candidates = [(architecture, trial) for architecture, trial in candidates if trial is not None]
    if not candidates:
        raise InputError(
            f"study {family.name} has no completed trial yet; run `spheroid-hpo launch --study "
            f"studies/{family.name}.toml` until one completes"
        )
    # The highest validation macro-F1; on a tie the architecture listed first, then the earlier trial.
    architecture, trial = max(candidates, key=lambda pair: pair[1].value)
    config = family.config
    artifact_dir = Path(artifact_dir) if artifact_dir is not None else default_artifact_dir(family.name, runs_dir=runs_dir)
    if not artifact_dir.is_dir():
        raise InputError(f"artifact folder {artifact_dir} does not exist; pass --artifacts with the study's folder")

    folder = study_data_dir(family, data_dir=data_dir, runs_dir=runs_dir)
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-export-") as scratch:
        scratch = Path(scratch)
        regenerated = prepare_split(
            folder, manifest_path=scratch / "regenerated.csv", seed=config.data.split_seed,
            fractions=config.data.fractions, group_by=config.data.group_by,
        )
        if regenerated.fingerprint != family.data["fingerprint"]:
            raise InputError(
                f"the split of study {family.name} cannot be drawn again from split_seed={config.data.split_seed} "
                f"and fractions={list(config.data.fractions)} on {folder} (the data or the split changed since "
                f"the study ran), so a retraining could not use the same split; pass --data with the study's data"
            )
        manifest = write_study_manifest(family, scratch / "splits.csv")
        dataset = load_study_data(family, data_dir=folder, manifest_path=manifest, splits=("test",))
        model = download_model(trial, artifact_store=open_artifact_store(artifact_dir), artifact_dir=artifact_dir,
                               study_name=config.study_name(architecture), folder=scratch)
        evaluation = evaluate_on_test(
            model, architecture=architecture, trial_number=trial.number, test=dataset.test,
            class_names=dataset.class_names, precision=config.training.precision,
            device=engine.resolve_device(device),
        )
    return BestConfig(
        study=family.name,
        architecture=architecture,
        trial=trial.number,
        trained_on=torch.device(trial.user_attrs.get("device", "cpu")).type,
        params=family.params(trial),
        image_size=int(family.data["image_size"]),
        seed=config.training.seed,
        precision=config.training.precision,
        weights=config.training.weights,
        threads=trial.user_attrs.get(THREADS_ATTR, threads),
        data_path=family.data["path"],
        demo=dict(family.data["demo"]) if family.data["path"] is None else None,
        split_seed=config.data.split_seed,
        fractions=tuple(config.data.fractions),
        group_by=config.data.group_by,
        fingerprint=family.data["fingerprint"],
        val_macro_f1=float(trial.value),
        test_macro_f1=evaluation.metrics.macro_f1,
        tolerance=tolerance,
    )


@dataclass(frozen=True)
class ReproduceResult:
    config: BestConfig
    val_macro_f1: float
    test_macro_f1: float
    device: str
    threads: int
    seconds: float
    out_dir: Path | None  # the retrained run folder, when one was asked for

    @property
    def within_tolerance(self) -> bool:
        return all(abs(obtained - expected) <= self.config.tolerance + 1e-12
                   for obtained, expected in self._pairs().values())

    def _pairs(self) -> dict[str, tuple[float, float]]:
        return {"val macro-F1": (self.val_macro_f1, self.config.val_macro_f1),
                "test macro-F1": (self.test_macro_f1, self.config.test_macro_f1)}

    def format_table(self) -> str:
        """Expected and obtained scores side by side, and the verdict."""
        c = self.config
        lines = [
            f"retrained {c.architecture} (trial {c.trial} of study {c.study}) on {self.device} with "
            f"{self.threads} thread(s), seed {c.seed}, in {self.seconds:.0f} s",
            f"{'':<15}{'expected':>10}{'obtained':>10}{'difference':>12}",
        ]
        for name, (obtained, expected) in self._pairs().items():
            lines.append(f"{name:<15}{expected:>10.4f}{obtained:>10.4f}{obtained - expected:>+12.4f}")
        verdict = "reproduced" if self.within_tolerance else "NOT reproduced"
        lines.append(f"{verdict}: tolerance {c.tolerance:g}")
        if c.trained_on != torch.device(self.device).type:
            lines.append(f"note: the trial trained on {c.trained_on}, this run on {self.device}; "
                         f"small differences are expected")
        return "\n".join(lines)


def reproduce(
    *,
    path: Path,
    data_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    out_dir: Path | None = None,
    device: str | None = None,
) -> ReproduceResult:
    """Retrain the configuration in ``path`` (a best.toml) on its split and score it.

    ``device`` defaults to the kind the trial trained on (CPU when that is not here),
    since CPU and GPU arithmetic differ in the last bits.
    """
    config = read_best_config(path)
    started = time.perf_counter()
    folder = _data_folder(config, data_dir=data_dir, runs_dir=Path(runs_dir))
    if device is None:
        device = "cuda" if config.trained_on == "cuda" and torch.cuda.is_available() else "cpu"
    torch_device = engine.resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-reproduce-") as scratch:
        scratch = Path(scratch)
        run_dir = Path(out_dir) if out_dir is not None else scratch / "run"
        # Always draw the split afresh: a manifest left by an earlier run would be reused as it is.
        (run_dir / "splits.csv").unlink(missing_ok=True)
        split = prepare_split(
            folder, manifest_path=run_dir / "splits.csv", seed=config.split_seed, fractions=config.fractions,
            group_by=config.group_by,
        )
        if split.fingerprint != config.fingerprint:
            raise InputError(
                f"the data in {folder} split with split_seed={config.split_seed} differs from the data "
                f"{path} was found on (fingerprint {split.fingerprint[:12]} != {config.fingerprint[:12]}); "
                f"pass --data with the same images"
            )
        with _torch_threads(config.threads):
            threads = torch.get_num_threads()
            results = run_training(
                data_dir=folder, out_dir=run_dir,
                arch=config.architecture, epochs=int(config.params["epochs"]), lr=float(config.params["lr"]),
                rotation=float(config.params["rotation"]), batch_size=int(config.params["batch_size"]),
                image_size=config.image_size, seed=config.seed, device=str(torch_device), weights=config.weights,
                precision=config.precision, bn_momentum=config.params.get("bn_momentum"),
                fractions=config.fractions, split_manifest=split.manifest_path, progress=False,
            )
    return ReproduceResult(
        # The trial's value is its last epoch's validation score, taken inside the training loop.
        config=config, val_macro_f1=results["history"][-1]["val_macro_f1"], test_macro_f1=results["test"]["macro_f1"],
        device=str(torch_device), threads=threads, seconds=time.perf_counter() - started,
        out_dir=Path(out_dir) if out_dir is not None else None,
    )


def read_best_config(path: Path) -> BestConfig:
    """Parse and validate a best.toml; InputError naming the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; write one with `spheroid-hpo export-best --study NAME > {path}`")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"{path} is not a readable TOML file: {error}") from error
    doc = _Section(raw, "", path)
    doc.keys(required=("best", "params", "training", "data", "expected"))
    best = doc.section("best")
    best.keys(required=("study", "architecture", "trial"), optional=("trained_on",))
    params = doc.section("params")
    params.keys(required=("epochs", "lr", "rotation", "batch_size"), optional=("bn_momentum",))
    training = doc.section("training")
    training.keys(required=("seed",), optional=("precision", "weights", "threads"))
    data = doc.section("data")
    data.keys(required=("image_size", "split_seed", "fractions", "fingerprint"), optional=("path", "group_by", "demo"))
    expected = doc.section("expected")
    expected.keys(required=("val_macro_f1", "test_macro_f1"), optional=("tolerance",))

    architecture = best.value("architecture", str)
    if architecture not in architecture_names():
        raise best.error("architecture", f"is {architecture!r}; use one of {', '.join(architecture_names())}")
    demo = None
    if data.value("path", str, None) is None:
        if "demo" not in data.raw:
            raise data.error("", "needs either path = \"DATA FOLDER\" or a [data.demo] table")
        section = data.section("demo")
        section.keys(required=("per_class", "size", "seed"))
        demo = {key: section.value(key, int) for key in ("per_class", "size", "seed")}
    fractions = data.value("fractions", list)
    if len(fractions) != 3 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions):
        raise data.error("fractions", f"must be three numbers (train, val, test), but got {fractions!r}")
    return BestConfig(
        study=best.value("study", str),
        architecture=architecture,
        trial=best.value("trial", int),
        trained_on=best.value("trained_on", str, "cpu"),
        params={name: params.positive(name, TUNABLE_PARAMS[name], allow_zero=name == "rotation")
                for name in params.raw},
        image_size=data.positive("image_size", int),
        seed=training.value("seed", int),
        precision=training.value("precision", str, "auto"),
        weights=training.value("weights", str, "none"),
        threads=training.positive("threads", int) if "threads" in training.raw else None,
        data_path=data.value("path", str, None),
        demo=demo,
        split_seed=data.value("split_seed", int),
        fractions=tuple(float(f) for f in fractions),
        group_by=data.value("group_by", str, None),
        fingerprint=data.value("fingerprint", str),
        val_macro_f1=expected.score("val_macro_f1"),
        test_macro_f1=expected.score("test_macro_f1"),
        tolerance=expected.score("tolerance", DEFAULT_TOLERANCE),
    )


class _Section:
    """One table of a best.toml: checks its keys and the type of each value."""

    def __init__(self, raw, where: str, path: Path):
        if not isinstance(raw, dict):
            raise InputError(f"{path}: [{where}] must be a table")
        self.raw, self.where, self.path = raw, where, path

    def section(self, name: str) -> _Section:
        return _Section(self.raw.get(name), f"{self.where}.{name}".lstrip("."), self.path)

    def error(self, key: str, message: str) -> InputError:
        where = f"{self.where}.{key}".strip(".")
        return InputError(f"{self.path}: {where} {message}; fix it or export the file again with export-best")

    def keys(self, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        allowed = (*required, *optional)
        for key in self.raw:
            if key not in allowed:
                raise self.error(key, f"is not a known key (valid in [{self.where or 'top level'}]: "
                                      f"{', '.join(allowed)})")
        for key in required:
            if key not in self.raw:
                raise self.error(key, "is missing")

    def value(self, key: str, kind: type, *default):
        if key not in self.raw:
            if default:
                return default[0]
            raise self.error(key, "is missing")
        value = self.raw[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(key, f"must be a {kind.__name__}, but got {value!r}")
        return value

    def positive(self, key: str, kind: type, *, allow_zero: bool = False):
        value = self.value(key, kind)
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise self.error(key, f"must be {'at least 0' if allow_zero else 'positive'}, but got {value!r}")
        return value

    def score(self, key: str, *default) -> float:
        value = self.value(key, float, *default)
        if not 0 <= value <= 1:
            raise self.error(key, f"must be between 0 and 1, but got {value!r}")
        return value


def _data_folder(config: BestConfig, *, data_dir: Path | None, runs_dir: Path) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if config.demo is not None:
        return ensure_demo_data(demo_data_dir(runs_dir, **config.demo), **config.demo)
    if not Path(config.data_path).is_dir():
        raise InputError(
            f"the configuration was found on {config.data_path}, which this machine does not have; pass --data "
            f"with this machine's copy of that folder"
        )
    return Path(config.data_path)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Train with the trial's CPU thread count, and give the process its own back afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr round-trips exactly, so the retraining uses the very learning rate the trial used.
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    # TOML basic strings take JSON's escapes.
    return json.dumps(str(value), ensure_ascii=False)

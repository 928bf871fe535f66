"""Study files (``studies/*.toml``), parsed once into frozen, validated dataclasses.

Precedence: a value given on the command line beats the study file, which beats
the defaults below. Every error names the file, the key and the fix, and is
raised before any work starts.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path

from spheroid_hpo.data import DEFAULT_SPLIT, SPLIT_KEYS, SplitSpec
from spheroid_hpo.data.demo import read_demo_settings
from spheroid_hpo.defaults import DEMO_SETTINGS, IMAGE_SIZE, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, given_over
from spheroid_hpo.errors import InputError
from spheroid_hpo.toml_table import TomlTable, toml_value
from spheroid_hpo.training.architectures import architecture_names, check_image_size
from spheroid_hpo.training.hyperparams import CATEGORICAL_VALUES, REQUIRED_PARAMS, TUNABLE_PARAMS, read_param
from spheroid_hpo.training.settings import TRAINING_DEFAULTS, TrainingSettings

MAX_TRIALS = 100_000
MAX_TIMEOUT_S = 365 * 24 * 3600
MAX_SEED = 2**31 - 1 - 100_000  # kept from when worker indexes were added; now mixed with each trial number
# The one list of sampler and pruner names: the parser checks names against these tuples without
# importing Optuna, and tuning.studies keys its builder registries (SAMPLER_BUILDERS,
# PRUNER_BUILDERS) by exactly these names; tests/test_samplers.py checks the two agree.
# gp: Optuna's GPSampler (Gaussian-process Bayesian optimisation); it fits completed trials only
# and suits small budgets of smooth numeric spaces.
SAMPLERS = ("tpe", "random", "gp")
PRUNERS = ("median", "successive_halving", "hyperband", "none")
# With cv_folds a trial reports at fold granularity (K steps); only pruners that compare
# trials at the same step make sense there, not epoch-budget ones.
CV_PRUNERS = ("median", "none")
METRICS = ("val_macro_f1",)  # what a trial's value is; the dashboard labels its axes with it
STUDY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class ParamSpec:
    """One searched hyperparameter: an int or float range, a list of choices, or a fixed value."""

    name: str
    kind: str  # "int" | "float" | "categorical" | "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    value: float | str | None = None
    choices: tuple = ()

    def contains(self, value: float | str) -> bool:
        """Whether ``value`` is one this parameter could take."""
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high and (self.step is None or on_grid(value, self.low, self.step))


def on_grid(value: float, low: float, step: float) -> bool:
    """Whether ``value`` is ``low`` plus a whole number of ``step``s, in the decimals the file wrote."""
    return (Decimal(str(value)) - Decimal(str(low))) % Decimal(str(step)) == 0


@dataclass(frozen=True)
class SamplerConfig:
    """The ``[sampler]`` table: which Optuna sampler proposes the trials."""

    name: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 10


@dataclass(frozen=True)
class PrunerConfig:
    """The ``[pruner]`` table: which Optuna pruner stops lagging trials, and when it may."""

    name: str = "median"
    n_startup_trials: int = 5
    n_warmup_steps: int = 2
    min_resource: int = 1
    reduction_factor: int = 3


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the generated demo data set, used when a study names no data folder."""

    per_class: int = DEMO_SETTINGS["per_class"]
    size: int = DEMO_SETTINGS["size"]
    seed: int = DEMO_SETTINGS["seed"]


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` table: the image folder (or demo data), image size, split and folds."""

    path: Path | None = None
    image_size: int = IMAGE_SIZE
    split: SplitSpec = DEFAULT_SPLIT
    demo: DemoConfig = field(default_factory=DemoConfig)
    # K >= 2: each trial trains K times on stratified folds of train+val; None: once, on train.
    cv_folds: int | None = None


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file, validated."""

    name: str
    architectures: tuple[str, ...]
    search_space: tuple[ParamSpec, ...]
    baseline: Mapping[str, float]
    n_trials: int = 20
    timeout: float | None = None
    metric: str = METRICS[0]
    storage: str | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingSettings = TRAINING_DEFAULTS
    source: Path | None = None

    def study_name(self, architecture: str) -> str:
        """The Optuna study that holds this architecture's trials."""
        return f"{self.name}.{architecture}"

    @property
    def max_epochs(self) -> int:
        """The largest epoch count a trial can train for (the pruner's max resource)."""
        spec = {spec.name: spec for spec in self.search_space}.get("epochs")
        if spec is None:
            return int(self.baseline.get("epochs", 1))
        if spec.kind == "categorical":
            return int(max(spec.choices))
        return int(spec.value if spec.kind == "fixed" else spec.high)


def load_study_config(
    path: Path | str,
    *,
    data: Path | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
) -> StudyConfig:
    """Parse and validate a study file; keyword arguments (from the CLI) override it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"study file {path} does not exist; pass --study with a file like studies/paper.toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read study file {path}: {error}") from error
    config = parse_study_text(text, source=path)
    return with_overrides(config, data=data, storage=storage, n_trials=n_trials, timeout=timeout)


def parse_study_text(text: str, *, source: Path) -> StudyConfig:
    """Parse the TOML ``text`` of a study file; ``source`` names it in error messages."""
    try:
        # A byte-order mark (Windows Notepad saves one) is no TOML; the manifest reader accepts it too.
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"study file {source} is not valid TOML: {error}") from error
    return _parse_study(raw, source=Path(source))


def with_overrides(
    config: StudyConfig,
    *,
    data: Path | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
) -> StudyConfig:
    """``config`` with the values given on the command line, which take precedence (``given_over``)."""
    if n_trials is not None and not 1 <= n_trials <= MAX_TRIALS:
        raise InputError(f"--n-trials must be from 1 to {MAX_TRIALS} (as in a study file), but got {n_trials}")
    if timeout is not None:
        check_timeout(timeout, "--timeout")
    return given_over(config, storage=storage, n_trials=n_trials, timeout=timeout,
                      data=given_over(config.data, path=Path(data) if data is not None else None))


def check_timeout(seconds: float, name: str) -> float:
    """``seconds`` if it is a timeout the study file would accept (NaN ran nothing, and exited 0)."""
    if not (math.isfinite(seconds) and 1 <= seconds <= MAX_TIMEOUT_S):
        raise InputError(f"{name} must be a number of seconds from 1 to {MAX_TIMEOUT_S} (a year), but got {seconds}")
    return seconds


def _parse_study(raw: dict, *, source: Path) -> StudyConfig:
    top = TomlTable(raw, "", source)
    top.check_keys(("study", "search_space", "baseline", "sampler", "pruner", "data", "training"))
    study = top.table("study")
    study.check_keys(("name", "architectures", "n_trials", "timeout", "metric", "storage"))

    name = study.get("name", str, source.stem)
    if not STUDY_NAME_PATTERN.match(name):
        raise study.error("name", f"is {name!r}; use letters, digits, '-' and '_' only (it names files)")
    architectures = tuple(study.get("architectures", list, []))
    if not architectures:
        raise study.error("architectures", "must list at least one architecture, e.g. [\"squeezenet1_0\"]")
    valid = architecture_names()
    for architecture in architectures:
        if architecture not in valid:
            raise study.error(
                "architectures", f"names unknown architecture {architecture!r}; valid: {', '.join(valid)}"
            )
    if len(set(architectures)) != len(architectures):
        raise study.error("architectures", f"lists an architecture twice: {list(architectures)}")

    search_space = _parse_search_space(top.table("search_space"))
    baseline = _parse_baseline(top.table("baseline"), search_space)
    data, pruner = _parse_data(top.table("data")), _parse_pruner(top.table("pruner"))
    if data.cv_folds is not None and pruner.name not in CV_PRUNERS:
        raise InputError(
            f"{source}: pruner.name = {pruner.name!r} prunes by epochs, but data.cv_folds = {data.cv_folds} "
            f"reports once per fold; use one of: {', '.join(CV_PRUNERS)}"
        )
    for architecture in architectures:
        try:
            check_image_size(architecture, data.image_size)
        except InputError as error:
            raise InputError(f"{source}: data.image_size: {error}") from None
    return StudyConfig(
        name=name,
        architectures=architectures,
        search_space=search_space,
        baseline=baseline,
        n_trials=study.positive("n_trials", int, StudyConfig.n_trials, maximum=MAX_TRIALS),
        timeout=study.positive("timeout", float, None, minimum=1, maximum=MAX_TIMEOUT_S),
        metric=study.choice("metric", METRICS, METRICS[0]),
        storage=study.get("storage", str, None),
        sampler=_parse_sampler(top.table("sampler")),
        pruner=pruner,
        data=data,
        training=TrainingSettings.from_table(top.table("training")),
        source=source,
    )


def _parse_search_space(table: TomlTable) -> tuple[ParamSpec, ...]:
    table.check_keys(tuple(TUNABLE_PARAMS))
    specs = []
    for name, raw in table.raw.items():
        kind = TUNABLE_PARAMS[name]
        if not isinstance(raw, dict):
            specs.append(ParamSpec(name=name, kind="fixed", value=read_param(table, name, name)))
            continue
        param = table.table(name)
        if "choices" in param.raw:
            specs.append(_parse_choices(param, name))
            continue
        if kind is str:
            raise param.error(
                "", f"takes choices, not a range: {name} = {{ choices = {toml_value(CATEGORICAL_VALUES[name])} }}"
            )
        param.check_keys(("low", "high", "log", "step"))
        if "low" not in param.raw or "high" not in param.raw:
            raise param.error("", f"needs both low and high, e.g. {name} = {{ low = 1, high = 10 }}")
        low, high = param.get("low", kind, None), param.get("high", kind, None)
        log = param.get("log", bool, False)
        step = param.get("step", kind, None)
        if low > high:
            raise param.error("low", f"({low}) is greater than high ({high}); swap them")
        if log and low <= 0:
            raise param.error("low", f"must be positive on a log scale, but got {low}; set log = false or raise low")
        if step is not None and not (math.isfinite(step) and step > 0) or step is not None and log:
            raise param.error("step", f"must be a positive number and cannot combine with log = true, but got {step}")
        if step is not None and (step > high - low or not on_grid(high, low, step)):
            # Optuna would silently move high onto the grid: step 1000 on [1, 2] searched [1, 1] only.
            raise param.error("step", f"= {step} must divide high - low = {high - low} into whole steps; "
                                      f"change low, high or step")
        for end in ("low", "high"):  # the checks a fixed value gets, on both ends
            read_param(param, end, name)
        specs.append(ParamSpec(name=name, kind=kind.__name__, low=low, high=high, log=log, step=step))
    missing = [name for name in REQUIRED_PARAMS if name not in table.raw]
    if missing:
        raise table.error("", f"must define {', '.join(missing)} (a range table or a fixed value)")
    return tuple(specs)


def _parse_choices(param: TomlTable, name: str) -> ParamSpec:
    """``name = { choices = [...] }``: a categorical parameter, each choice of the key's type."""
    param.check_keys(("choices",))
    choices = param.get("choices", list, [])
    example = f"{name} = {{ choices = {toml_value(CATEGORICAL_VALUES.get(name, (8, 16)))} }}"
    if not choices:
        raise param.error("choices", f"must list at least one value, e.g. {example}, but got {choices=}")

    # Each choice gets the checks a fixed value gets.
    checked = [read_param(TomlTable({"choices": value}, param.where, param.source), "choices", name)
               for value in choices]
    if len(set(checked)) != len(checked):
        raise param.error("choices", f"lists a value twice; list each once, but got {choices=}")
    return ParamSpec(name=name, kind="categorical", choices=tuple(checked))


def _parse_baseline(table: TomlTable, search_space: tuple[ParamSpec, ...]) -> dict[str, float]:
    specs = {spec.name: spec for spec in search_space}
    table.check_keys(tuple(specs))
    baseline = {}
    for name in table.raw:
        value = table.get(name, TUNABLE_PARAMS[name], None)
        if not specs[name].contains(value):
            raise table.error(name, f"= {value} lies outside the search space (its range, choices or step); "
                                    f"the baseline must be a point in it")
        baseline[name] = value
    return baseline


def _parse_sampler(table: TomlTable) -> SamplerConfig:
    table.check_keys(_keys(SamplerConfig))
    default = SamplerConfig()
    return SamplerConfig(
        name=table.choice("name", SAMPLERS, default.name),
        seed=table.positive("seed", int, default.seed, minimum=0, maximum=MAX_SEED),
        n_startup_trials=table.positive("n_startup_trials", int, default.n_startup_trials, minimum=0),
    )


def _parse_pruner(table: TomlTable) -> PrunerConfig:
    table.check_keys(_keys(PrunerConfig))
    default = PrunerConfig()
    return PrunerConfig(
        name=table.choice("name", PRUNERS, default.name),
        n_startup_trials=table.positive("n_startup_trials", int, default.n_startup_trials, minimum=0),
        n_warmup_steps=table.positive("n_warmup_steps", int, default.n_warmup_steps, minimum=0),
        min_resource=table.positive("min_resource", int, default.min_resource),
        reduction_factor=table.positive("reduction_factor", int, default.reduction_factor, minimum=2),
    )


def _parse_data(table: TomlTable) -> DataConfig:
    table.check_keys(("path", "image_size", *SPLIT_KEYS, "demo", "cv_folds"))
    demo = read_demo_settings(table.table("demo"), defaults=DEMO_SETTINGS)
    path = table.get("path", str, None)
    return DataConfig(
        path=Path(path) if path else None,
        image_size=table.positive("image_size", int, IMAGE_SIZE, minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE),
        split=SplitSpec.from_table(table),
        cv_folds=table.positive("cv_folds", int, None, minimum=2),
        demo=DemoConfig(**demo),
    )


def _keys(table_type: type) -> tuple[str, ...]:
    """The keys a ``[sampler]``/``[pruner]`` table takes: its dataclass's fields, declared once."""
    return tuple(item.name for item in fields(table_type))

"""The package's architecture, enforced: layers import only downwards, light modules stay light,
and every trial attribute key and every file name a study leaves is spelled in one place.
(Relative imports, which would slip past the layer check, are refused by ruff's TID252.)

Layers, lowest first: the foundation modules (errors, defaults, atomic_write, toml_table), then
data < training < tuning < results < cli (``../shared/DESIGN.md``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spheroid_hpo"
FOUNDATION = {"errors", "defaults", "atomic_write", "toml_table", "notices"}
LAYERS = ("foundation", "data", "training", "tuning", "results", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer of a ``spheroid_hpo`` module, or None for the package root and ``__main__``."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return None
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every ``spheroid_hpo`` module ``path`` imports, at any depth (function-level imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # ``from spheroid_hpo.training import loop`` imports the module spheroid_hpo.training.loop
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("spheroid_hpo.")]


def test_every_module_lives_in_a_layer():
    unplaced = [module_name(p) for p in package_modules()
                if layer_of(module_name(p)) not in (*LAYERS, None)]
    assert unplaced == [], f"modules outside the layers {LAYERS}: {unplaced}"


def test_no_module_imports_from_a_layer_above_it():
    upward = []
    for path in package_modules():
        here = layer_of(module_name(path))
        if here is None:
            continue
        for line, imported in imported_modules(path):
            there = layer_of(imported)
            if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {imported} ({there})")
    assert upward == [], "imports that point up a layer:\n" + "\n".join(upward)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_importing_training_and_data_loads_no_optuna():
    modules = [module_name(p) for p in package_modules() if layer_of(module_name(p)) in ("data", "training")]
    modules = [m for m in modules if m != "spheroid_hpo.training.onnx_model"]  # needs the export extra
    code = "\n".join(f"import {m}" for m in modules) + (
        "\nimport sys\nloaded = sorted(m for m in sys.modules if m == 'optuna' or m.startswith('optuna.'))"
        "\nprint(loaded[:5])\nassert not loaded, loaded"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(modules) > 20  # the scan saw the layers, not an empty list


def test_parsing_a_study_file_loads_no_torch():
    code = (
        "import sys\n"
        "from spheroid_hpo.tuning.study_file import load_study_config\n"
        "config = load_study_config('studies/quickstart.toml')\n"
        "assert config.architectures, config\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'matplotlib', 'optuna') if m in sys.modules)\n"
        "print(heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reading_a_data_record_loads_no_torch():
    code = (
        "import sys\n"
        "from spheroid_hpo.data import DataSource\n"
        "source = DataSource.from_dict({'path': None, 'demo': {'per_class': 4, 'size': 32, 'seed': 0},"
        " 'image_size': 32, 'fingerprint': 'f'})\n"
        "assert source.describe() == 'the demo data'\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stdout + result.stderr


ATTRIBUTE_CALLS = {"set_user_attr", "set_system_attr"}
# The storage-level setters take an id first, then the key.
STORAGE_ATTRIBUTE_CALLS = {"set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr",
                           "set_study_system_attr"}


def spelled_attribute_keys(path: Path) -> list[str]:
    """String literals used as attribute keys: ``x.set_user_attr("k", ...)``, ``user_attrs.get("k")``,
    ``user_attrs["k"]``, ``"k" in user_attrs``, ``enqueue_trial(..., user_attrs={"k": ...})`` and
    ``storage.set_trial_user_attr(trial_id, "k", ...)``."""
    spelled = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            on_attrs = isinstance(target, ast.Attribute) and target.attr in ("user_attrs", "system_attrs")
            if (node.func.attr in ATTRIBUTE_CALLS or (on_attrs and node.func.attr == "get")) and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                spelled.append(f"{node.lineno}: {node.args[0].value!r}")
            if node.func.attr in STORAGE_ATTRIBUTE_CALLS and len(node.args) > 1 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                spelled.append(f"{node.lineno}: {node.args[1].value!r}")
            for keyword in node.keywords:
                if keyword.arg == "user_attrs" and isinstance(keyword.value, ast.Dict):
                    spelled += [f"{node.lineno}: {key.value!r}" for key in keyword.value.keys
                                if isinstance(key, ast.Constant)]
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("user_attrs", "system_attrs") \
                and isinstance(node.slice, ast.Constant):
            spelled.append(f"{node.lineno}: {node.slice.value!r}")
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) \
                and isinstance(node.left.value, str) and len(node.ops) == 1 \
                and isinstance(node.ops[0], (ast.In, ast.NotIn)) and isinstance(node.comparators[0], ast.Attribute) \
                and node.comparators[0].attr in ("user_attrs", "system_attrs"):
            spelled.append(f"{node.lineno}: {node.left.value!r}")
    return spelled


def test_only_the_records_module_spells_an_attribute_key():
    records = PACKAGE / "tuning" / "records.py"
    offenders = {str(path.relative_to(ROOT)): keys for path in package_modules()
                 if path != records and (keys := spelled_attribute_keys(path))}
    assert offenders == {}, f"attribute keys spelled outside tuning/records.py: {offenders}"
    constants = [node for node in ast.parse(records.read_text()).body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert len(constants) >= 20  # the keys do live there


def test_the_attribute_key_scan_finds_each_form(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        'trial.set_user_attr("a", 1)\nt.user_attrs.get("b")\nt.user_attrs["c"]\n'
        'study.enqueue_trial({}, user_attrs={"d": True})\n'
        'storage.set_trial_system_attr(trial_id, "e", 1)\nif "f" not in t.user_attrs: pass\n'
    )
    keys = sorted(key.split(": ")[1] for key in spelled_attribute_keys(sample))
    assert keys == ["'a'", "'b'", "'c'", "'d'", "'e'", "'f'"]


# Names of the files a study, a trial or a run leaves; readers and writers share one constant.
STUDY_FILE_NAMES = ("splits.csv", "model.pt", "metrics.json", "history.csv")


@pytest.mark.parametrize("name", STUDY_FILE_NAMES)
def test_each_file_name_a_study_leaves_is_spelled_once(name):
    spelled = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in package_modules()
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value == name]
    assert len(spelled) == 1, f"{name!r} is spelled {len(spelled)} times: {spelled}; name it once and import it"


def test_the_package_init_files_only_re_export():
    """``__init__`` files hold docstrings, imports, ``__all__`` and (data) the lazy re-export hook."""
    for path in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            allowed = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign, ast.AnnAssign, ast.FunctionDef)
            assert isinstance(node, allowed), f"{path.relative_to(ROOT)}:{node.lineno} holds {type(node).__name__}"
            if isinstance(node, ast.FunctionDef):
                assert node.name in ("__getattr__", "__dir__"), f"{path.relative_to(ROOT)} defines {node.name}"

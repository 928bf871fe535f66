"""Apply each breakage in tests/mutations.txt to a scratch copy of the tree and run the tests that claim to catch it.

    python tests/check_mutations.py                 # every entry; exit 1 if one survives
    python tests/check_mutations.py --list          # the entries' names
    python tests/check_mutations.py NAME [NAME ...] # only these entries
    python tests/check_mutations.py --jobs 2        # two entries at once, each in its own scratch tree
    python tests/check_mutations.py --unmutated     # the named tests on the unbroken tree (they must pass)

An entry whose original snippet is not found exactly once in its file fails the
check, naming the entry: a refactor that moves the code must move the entry too.
The scratch copy holds the files git knows (tracked, and untracked ones not
ignored); its tests import the scratch package through PYTHONPATH.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = Path(__file__).with_name("mutations.txt")
_PRINTING = threading.Lock()  # parallel jobs print whole reports, never halves of two


def report(text: str) -> None:
    """Print ``text`` at once, whichever job it comes from."""
    with _PRINTING:
        print(text, flush=True)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    tests: tuple[str, ...]
    original: str
    broken: str


def parse_mutations(text: str) -> list[Mutation]:
    """Entries of the form::

        [name]
        file: path/in/repo.py
        tests: tests/test_x.py::test_a tests/test_y.py::test_b
        original:
        |exact lines, each after a '|'
        broken:
        |the replacement lines

    Lines starting with '#' outside a snippet are comments.
    """
    entries: list[Mutation] = []
    current: dict | None = None
    section = None

    def finish():
        if current is None:
            return
        missing = [key for key in ("file", "tests", "original", "broken") if not current.get(key)]
        if missing:
            raise SystemExit(f"mutations.txt: entry [{current['name']}] lacks {', '.join(missing)}")
        entries.append(Mutation(
            name=current["name"], file=current["file"], tests=tuple(current["tests"].split()),
            original="\n".join(current["original"]), broken="\n".join(current["broken"]),
        ))

    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("|"):
            if current is None or section not in ("original", "broken"):
                raise SystemExit(f"mutations.txt:{number}: snippet line outside original:/broken:")
            current[section].append(line[1:])
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            finish()
            current, section = {"name": stripped[1:-1], "original": [], "broken": []}, None
        elif current is None:
            raise SystemExit(f"mutations.txt:{number}: expected [name] first")
        elif stripped in ("original:", "broken:"):
            section = stripped[:-1]
        elif ":" in stripped:
            key, _, value = stripped.partition(":")
            current[key.strip()] = value.strip()
            section = None
        else:
            raise SystemExit(f"mutations.txt:{number}: cannot read {line!r}")
    finish()
    names = [entry.name for entry in entries]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise SystemExit(f"mutations.txt: duplicate entry names {sorted(duplicates)}")
    return entries


def copy_tree(target: Path) -> None:
    """The files git knows about, copied to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if source.is_file():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[bool, str]:
    """Run ``tests`` in ``tree``; True when they pass."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    # Temporary folders beside the tree, not in the pytest folder that parallel jobs share.
    basetemp = tree.with_name(f"{tree.name}-tmp")
    result = subprocess.run(
        # -m "": the entry's tests run whatever their markers (the default run leaves the heavy ones out,
        # and a deselected test would let its breakage count as caught).
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header", "-m", "",
         f"--basetemp={basetemp}", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )
    return result.returncode == 0, result.stdout + result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="entries to check (default: all)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--unmutated", action="store_true", help="run the named tests on the unbroken tree")
    parser.add_argument("-v", "--verbose", action="store_true", help="print test output of every run")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="entries checked at once, each in a scratch tree of its own (default: 1)")
    args = parser.parse_args(argv)

    entries = parse_mutations(MUTATIONS.read_text())
    if args.list:
        for entry in entries:
            print(f"{entry.name:<40} {entry.file}  ->  {' '.join(entry.tests)}")
        return 0
    if args.names:
        unknown = sorted(set(args.names) - {entry.name for entry in entries})
        if unknown:
            print(f"unknown entries: {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        entries = [entry for entry in entries if entry.name in args.names]

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spheroid-hpo-mutations-") as scratch:
        shared = ROOT.parent / "shared"
        if shared.is_dir():  # the real data tests read at ../shared (tests/real_data.py), beside each tree
            (Path(scratch) / "shared").symlink_to(shared)
        if args.unmutated:
            tree = Path(scratch) / "tree"
            copy_tree(tree)
            tests = tuple(dict.fromkeys(test for entry in entries for test in entry.tests))
            passed, output = run_tests(tree, tests)
            print(output if args.verbose or not passed else output.strip().splitlines()[-1])
            print(f"unmutated: {'PASSED' if passed else 'FAILED'} ({time.monotonic() - started:.0f} s)")
            return 0 if passed else 1
        # One scratch tree per job: each entry breaks one file of its own tree, runs, and restores it.
        trees: queue.Queue[Path] = queue.Queue()
        for job in range(max(1, min(args.jobs, len(entries)))):
            tree = Path(scratch) / f"tree-{job}"
            copy_tree(tree)
            trees.put(tree)

        def check(entry: Mutation) -> bool:
            tree = trees.get()
            try:
                return check_entry(entry, tree, verbose=args.verbose)
            finally:
                trees.put(tree)

        with concurrent.futures.ThreadPoolExecutor(max_workers=trees.qsize()) as pool:
            caught = list(pool.map(check, entries))
    failures = caught.count(False)
    print(f"{len(entries) - failures}/{len(entries)} breakages caught in {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


def check_entry(entry: Mutation, tree: Path, *, verbose: bool = False) -> bool:
    """Apply ``entry`` to ``tree``, run its tests, restore the file; True when the tests caught it."""
    path = tree / entry.file
    text = path.read_text() if path.is_file() else ""
    found = text.count(entry.original)
    if found != 1:
        where = "not found" if found == 0 else f"found {found} times"
        report(f"ERROR     {entry.name}: original snippet {where} in {entry.file}; update mutations.txt")
        return False
    started = time.monotonic()
    path.write_text(text.replace(entry.original, entry.broken))
    try:
        passed, output = run_tests(tree, entry.tests)
    finally:
        path.write_text(text)
    seconds = time.monotonic() - started
    if passed:
        report(f"SURVIVED  {entry.name} ({seconds:.0f} s): {' '.join(entry.tests)} still pass\n{output}")
    else:
        report(f"KILLED    {entry.name} ({seconds:.0f} s)" + (f"\n{output}" if verbose else ""))
    return not passed


if __name__ == "__main__":
    sys.exit(main())

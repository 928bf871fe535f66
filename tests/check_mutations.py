"""Apply each breakage in tests/mutations.txt to a scratch copy of the tree and run the tests that claim to catch it.

    python tests/check_mutations.py                 # every entry; exit 1 if one survives
    python tests/check_mutations.py --list          # the entries' names
    python tests/check_mutations.py NAME [NAME ...] # only these entries
    python tests/check_mutations.py --jobs 2        # two entries at once, each in its own scratch tree
    python tests/check_mutations.py --unmutated     # the named tests on the unbroken tree (they must pass)
    python tests/check_mutations.py --no-fork       # a fresh interpreter per entry (slower; no fork server)

An entry whose original snippet is not found exactly once in its file fails the
check, naming the entry: a refactor that moves the code must move the entry too;
so does an entry naming a test that does not exist. The scratch copy holds the
files git knows (tracked, and untracked ones not ignored); its tests import the
scratch package through PYTHONPATH.

Each job's tests run in a fork server: a process started in the job's scratch tree
that imports the heavy third-party modules once (torch, optuna, scikit-learn, ...;
never spheroid_hpo or the tests, which each entry must import afresh, broken), then
forks one child per entry that runs pytest on the entry's tests. That saves the
5 s of imports a fresh interpreter pays per entry. The server starts no thread
pool (it runs no torch operation), so the children are as a fresh process.
"""

from __future__ import annotations

import argparse
import compileall
import concurrent.futures
import gc
import importlib
import json
import os
import py_compile
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = Path(__file__).with_name("mutations.txt")
# What the fork server imports once: the third-party modules the package and the tests load, which
# cost about 5 s per fresh interpreter. Never spheroid_hpo or a test module: those are imported
# afresh by each entry's child, since an entry breaks one of them.
PRELOAD = (
    "numpy", "scipy", "scipy.ndimage", "scipy.stats", "PIL.Image", "torch", "torch.nn", "torchvision",
    "torchvision.models", "torchvision.transforms", "sklearn", "sklearn.metrics", "sklearn.model_selection",
    "optuna", "optuna.storages", "optuna.visualization", "sqlalchemy", "pandas", "matplotlib",
    "matplotlib.figure", "matplotlib.ticker", "tifffile", "typer", "typer.testing", "rich", "rich.console",
    "rich.progress", "cleanlab", "cleanlab.filter", "pytest", "_pytest.pytester",
)
# A forked child that runs longer than this is taken for a hang (a fork from a process whose threads held
# a lock can deadlock): it is killed and the entry's tests run again in a fresh interpreter, without a limit.
ENTRY_LIMIT_S = 900
TIMED_OUT = 1000  # the server's answer for a child it killed at ENTRY_LIMIT_S
_PRINTING = threading.Lock()  # parallel jobs print whole reports, never halves of two
SLOWEST_SHOWN = 15  # the summary at the end lists this many of the slowest entries


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
    # Bytecode checked against a hash of its source on every import: the file an entry breaks is
    # compiled afresh (and never written back), every other module is read compiled.
    compileall.compile_dir(target / "spheroid_hpo", quiet=1,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def pytest_args(basetemp: Path, tests: tuple[str, ...]) -> list[str]:
    """pytest's arguments for an entry's ``tests``, in a fresh interpreter or a forked child alike."""
    # -m "": the entry's tests run whatever their markers (the default run leaves the heavy ones out,
    # and a deselected test would let its breakage count as caught).
    # -p no:anyio: a dependency's pytest plugin that imports anyio's event-loop backends and has
    # pytest rewrite the asserts of 40 of its modules in each child (0.5 s an entry); no test uses it.
    return ["-q", "-x", "-p", "no:cacheprovider", "-p", "no:anyio", "--no-header", "-m", "",
            f"--basetemp={basetemp}", *tests]


# Threads per process for the entries' tests, unless the environment sets them: one. CI runs the check
# beside two other lanes on 2 cores, where two torch threads per process spin against each other (one
# entry took 14.5-18.4 s with two threads and 4.7 s with one, at load 5). Worker processes a test
# launches get their own count from the launcher.
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _environment(tree: Path) -> dict[str, str]:
    # No bytecode written: a broken file and its restored original can share a size and an mtime second.
    return {**THREADS, **os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def _basetemp(tree: Path) -> Path:
    # Temporary folders beside the tree, not in the pytest folder that parallel jobs share.
    return tree.with_name(f"{tree.name}-tmp")


def run_tests(tree: Path, tests: tuple[str, ...], server: ForkServer | None = None) -> tuple[bool, str]:
    """Run ``tests`` in ``tree`` (in a child of ``server``, else a fresh interpreter); True when they pass."""
    if server is not None:
        code, output = server.run(tests)
        if code != TIMED_OUT:
            return code == 0, output
        passed, again = run_tests(tree, tests)
        return passed, f"{output}\n(the forked child ran past {ENTRY_LIMIT_S} s; in a fresh interpreter:)\n{again}"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args(_basetemp(tree), tests)],
        cwd=tree, env=_environment(tree), capture_output=True, text=True,
    )
    return result.returncode == 0, result.stdout + result.stderr


class ForkServer:
    """A process in ``tree`` that has imported ``preload`` and forks a pytest child per request."""

    def __init__(self, tree: Path, preload: tuple[str, ...] = PRELOAD):
        self.tree = Path(tree)
        self.log = _basetemp(self.tree).with_name(f"{self.tree.name}-server.log")
        self._stderr = open(self.log, "w")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", ",".join(preload)],
            cwd=self.tree, env=_environment(self.tree), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True,
        )

    def run(self, tests: tuple[str, ...]) -> tuple[int, str]:
        """Run ``tests`` in a forked child; its exit status (pytest's, or minus a signal) and output."""
        output = self.tree.with_name(f"{self.tree.name}-output.txt")
        request = {"tree": str(self.tree), "args": pytest_args(_basetemp(self.tree), tests), "output": str(output)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            self.process.wait()
            raise RuntimeError(f"the fork server in {self.tree} exited ({self.process.returncode}):\n"
                               f"{self.log.read_text()[-3000:]}")
        code = json.loads(answer)["code"]
        text = output.read_text(errors="replace")
        if code < 0:
            text += f"\n(the child was ended by signal {-code})"
        return code, text

    def close(self) -> None:
        """Let the server exit (it ends when its requests do)."""
        self.process.stdin.close()
        self.process.wait()
        self._stderr.close()


def serve(preload: str) -> int:
    """The fork server's loop: import ``preload`` (comma-separated), then one forked pytest per request line."""
    for name in filter(None, preload.split(",")):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional extra not installed: its tests import it (or skip) themselves
    loaded = sorted(name for name in sys.modules if name == "spheroid_hpo" or name.startswith("spheroid_hpo."))
    if loaded:  # an entry's broken file must be imported afresh in each child
        raise SystemExit(f"the fork server imported {loaded}; it must not")
    # What is imported so far outlives every child: out of the garbage collector's sight, so that a
    # child's full collections (pytest runs two as it ends) skip it: 0.5 s an entry.
    gc.freeze()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        print(json.dumps({"code": _forked_pytest(**request)}), flush=True)


def _forked_pytest(tree: str, args: list[str], output: str) -> int:
    """Run pytest with ``args`` in a child forked from here, its output to ``output``; its exit status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: a fresh `python -m pytest ARGS` in ``tree``, as far as the tests can tell
        code = 3
        try:
            sink = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(sink, 1)
            os.dup2(sink, 2)
            os.close(sink)
            nothing = os.open(os.devnull, os.O_RDONLY)
            os.dup2(nothing, 0)
            os.close(nothing)
            os.chdir(tree)
            sys.path[0] = tree  # where `python -m pytest` run in the tree puts its folder
            sys.argv = [sys.executable, *args]
            import pytest

            code = int(pytest.main(args))
        except BaseException:  # noqa: B036 (the child must reach os._exit whatever happened)
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + ENTRY_LIMIT_S
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return TIMED_OUT if time.monotonic() > deadline else os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="entries to check (default: all)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.add_argument("--unmutated", action="store_true", help="run the named tests on the unbroken tree")
    parser.add_argument("-v", "--verbose", action="store_true", help="print test output of every run")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="entries checked at once, each in a scratch tree of its own (default: 1)")
    parser.add_argument("--no-fork", action="store_true",
                        help="run each entry's tests in a fresh interpreter instead of a fork of a server")
    parser.add_argument("--serve", metavar="MODULES", help=argparse.SUPPRESS)  # the fork server itself
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args.serve)

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
        servers: list[ForkServer] = []

        def server_for(tree: Path) -> ForkServer | None:
            if args.no_fork:
                return None
            servers.append(ForkServer(tree))
            return servers[-1]

        if args.unmutated:
            tree = Path(scratch) / "tree"
            copy_tree(tree)
            tests = tuple(dict.fromkeys(test for entry in entries for test in entry.tests))
            try:
                passed, output = run_tests(tree, tests, server_for(tree))
            finally:
                for server in servers:
                    server.close()
            print(output if args.verbose or not passed else output.strip().splitlines()[-1])
            print(f"unmutated: {'PASSED' if passed else 'FAILED'} ({time.monotonic() - started:.0f} s)")
            return 0 if passed else 1
        # One scratch tree per job: each entry breaks one file of its own tree, runs, and restores it.
        trees: queue.Queue[tuple[Path, ForkServer | None]] = queue.Queue()
        for job in range(max(1, min(args.jobs, len(entries)))):
            tree = Path(scratch) / f"tree-{job}"
            copy_tree(tree)
            trees.put((tree, server_for(tree)))

        def check(entry: Mutation) -> tuple[bool, float]:
            """Whether ``entry`` was caught, and the seconds it took (breaking, running and restoring)."""
            tree, server = trees.get()
            started = time.monotonic()
            try:
                return check_entry(entry, tree, verbose=args.verbose, server=server), time.monotonic() - started
            finally:
                trees.put((tree, server))

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=trees.qsize()) as pool:
                results = list(pool.map(check, entries))
        finally:
            for server in servers:
                server.close()
    caught = [entry_caught for entry_caught, _ in results]
    failures = caught.count(False)
    print(slowest_summary({entry.name: seconds for entry, (_, seconds) in zip(entries, results)}))
    print(f"{len(entries) - failures}/{len(entries)} breakages caught in {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


def slowest_summary(seconds: dict[str, float], shown: int = SLOWEST_SHOWN) -> str:
    """The ``shown`` slowest entries, slowest first, each with its seconds, and the total of all."""
    ranked = sorted(seconds.items(), key=lambda item: item[1], reverse=True)[:shown]
    lines = [f"slowest {len(ranked)} of {len(seconds)} entries ({sum(seconds.values()):.0f} s in all):"]
    lines += [f"  {taken:6.1f} s  {name}" for name, taken in ranked]
    return "\n".join(lines)


def check_entry(entry: Mutation, tree: Path, *, verbose: bool = False, server: ForkServer | None = None) -> bool:
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
        passed, output = run_tests(tree, entry.tests, server)
    finally:
        path.write_text(text)
    seconds = time.monotonic() - started
    missing = [line for line in output.splitlines() if line.startswith("ERROR: ") and "not found" in line]
    if missing:  # pytest's exit status for a test id that names nothing: not a breakage caught
        report(f"ERROR     {entry.name}: {' '.join(entry.tests)} name no test ({missing[0]}); update mutations.txt")
        return False
    if passed:
        report(f"SURVIVED  {entry.name} ({seconds:.1f} s): {' '.join(entry.tests)} still pass\n{output}")
    else:
        report(f"KILLED    {entry.name} ({seconds:.1f} s)" + (f"\n{output}" if verbose else ""))
    return not passed


if __name__ == "__main__":
    sys.exit(main())

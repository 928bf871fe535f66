"""``spheroid-hpo launch``: create the studies once, start N workers, show live progress.

Workers are separate processes running ``spheroid-hpo worker`` (the very code a
user runs by hand on another machine). Each gets a device and its share of the
CPU threads. Ctrl-C stops them cleanly: running trials are marked interrupted
and the next launch resumes them from their checkpoints.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from spheroid_hpo.defaults import MAX_WORKERS_PER_CORE, RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.training.hyperparams import format_params
from spheroid_hpo.tuning.create import create_study_family
from spheroid_hpo.tuning.progress import ArchitectureProgress, summarize_studies
from spheroid_hpo.tuning.storage import masked_url, split_password
from spheroid_hpo.tuning.study_file import StudyConfig
from spheroid_hpo.tuning.worker_output import WorkerOutput
from spheroid_hpo.tuning.workspace import Workspace

POLL_SECONDS = 2.0
STOP_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class LaunchSummary:
    """How a launch ended: the study, where its results are, each worker's exit and the progress."""

    study_name: str
    storage_url: str
    artifact_dir: Path
    log_dir: Path
    progress: list[ArchitectureProgress]
    worker_exit_codes: list[int]
    worker_logs: list[Path]
    worker_errors: list[str | None]  # the last error line each worker printed (its log may have lost it)
    interrupted: bool
    seconds: float


def worker_devices(workers: int, gpus: list[int] | None) -> list[str]:
    """Device of each worker: GPU i mod n when GPUs are given or present, else the CPU. A given GPU
    this machine lacks is an error here, not in each worker after the launch has started."""
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [gpu for gpu in gpus or () if not 0 <= gpu < present]
    if missing:
        have = f"{present} CUDA GPU(s), indexes 0 to {present - 1}" if present else "no CUDA GPU"
        raise InputError(f"--gpus names GPU {', '.join(map(str, missing))}, but this machine has {have}; "
                         f"leave --gpus out to use what there is")
    if gpus is None and torch.cuda.is_available():
        gpus = list(range(torch.cuda.device_count()))
    if not gpus:
        return ["cpu"] * workers
    return [f"cuda:{gpus[i % len(gpus)]}" for i in range(workers)]


def threads_per_worker(workers: int, cpu_count: int | None = None) -> int:
    """The CPU cores split evenly between workers, so they do not oversubscribe the machine."""
    return max(1, (cpu_count or os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def optuna_messages_to(path: Path) -> Iterator[None]:
    """Send Optuna's log lines to the file ``path`` instead of the terminal while the block runs."""
    logger = optuna.logging.get_logger("optuna")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(message)s"))
    optuna.logging.disable_default_handler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        optuna.logging.enable_default_handler()


def launch(
    *,
    config: StudyConfig,
    workers: int = 1,
    gpus: list[int] | None = None,
    artifact_dir: Path | None = None,
    runs_dir: Path = RUNS_DIR,
    heartbeat_interval: int | None = None,
    console: Console | None = None,
) -> LaunchSummary:
    """Create ``config``'s studies in storage, run ``workers`` worker processes to the end of the budget."""
    console = console or log_console(stderr=True)
    check_worker_count(workers, console=console)
    devices = worker_devices(workers, gpus)
    started = time.monotonic()
    workspace = Workspace.of(config.name, runs_dir=runs_dir, storage_url=config.storage, artifact_dir=artifact_dir)
    log_dir = workspace.logs
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write in --runs-dir {runs_dir}: {error.strerror} ({error.filename}); "
                         f"pass --runs-dir a folder you can write") from error
    # Optuna's INFO lines ("A new study created in RDB ...") would interleave with the live table.
    with optuna_messages_to(log_dir / "launch.log"):
        family = create_study_family(config=config, runs_dir=runs_dir)
    storage_url, studies = family.storage_url, family.studies
    artifact_dir = workspace.artifact_dir

    threads = threads_per_worker(workers)
    console.print(
        f"study [bold]{config.name}[/] ({', '.join(config.architectures)}), {config.n_trials} trials each, "
        f"storage {masked_url(storage_url)}\n"
        f"{workers} worker(s) on {', '.join(sorted(set(devices)))} with {threads} thread(s) each; logs in {log_dir}/\n"
        f"watch it in the browser: [bold]spheroid-hpo dashboard --storage {masked_url(storage_url)} "
        f"--artifacts {artifact_dir}[/]"
    )
    logs = claim_worker_logs(log_dir, workers)
    processes: list[subprocess.Popen] = []
    outputs: list[WorkerOutput] = []
    for (index, log_path), device in zip(logs, devices):
        try:
            processes.append(_start_worker(
                index, config=config, storage_url=storage_url, artifact_dir=artifact_dir, runs_dir=runs_dir,
                device=device, threads=threads, heartbeat_interval=heartbeat_interval,
            ))
            outputs.append(WorkerOutput(processes[-1].stdout, log_path))
        except OSError as error:  # the process limit (ulimit -u), or memory: stop those already started
            _stop_workers(processes)
            raise InputError(
                f"could not start worker {len(processes) + 1} of {workers}: {error.strerror or error} "
                f"(a limit on processes or memory); launch fewer --workers (finished trials are kept)"
            ) from error
    interrupted = False
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=1, transient=False) as live:
                while any(process.poll() is None for process in processes):
                    live.update(_live_view(studies, processes, started))
                    time.sleep(POLL_SECONDS)
                live.update(_live_view(studies, processes, started))
        else:
            _log_progress(studies, processes, started, console)
    except KeyboardInterrupt:
        interrupted = True
        console.print("stopping workers: running trials are saved as interrupted and resume on the next launch")
        _stop_workers(processes)
    progress = summarize_studies(studies)
    return LaunchSummary(
        study_name=config.name, storage_url=storage_url, artifact_dir=artifact_dir, log_dir=log_dir, progress=progress,
        worker_exit_codes=[process.returncode for process in processes], worker_logs=[path for _, path in logs],
        worker_errors=[output.finish() for output in outputs], interrupted=interrupted,
        seconds=time.monotonic() - started,
    )


def check_worker_count(workers: int, *, console: Console, cpu_count: int | None = None) -> None:
    """Refuse a worker count no machine runs well (above ``MAX_WORKERS_PER_CORE`` per core); warn above the cores."""
    cores = cpu_count or os.cpu_count() or 1
    most = MAX_WORKERS_PER_CORE * cores
    if not 1 <= workers <= most:
        raise InputError(
            f"--workers must be from 1 to {most} ({MAX_WORKERS_PER_CORE} per CPU core, {cores} cores here), but "
            f"got {workers}: each worker is a process of about 300 MB with at least one thread"
        )
    if workers > cores:
        console.print(f"warning: {workers} workers share {cores} CPU cores, one thread each; "
                      f"they run no faster than {cores} would", highlight=False, soft_wrap=True)


def claim_worker_logs(log_dir: Path, workers: int) -> list[tuple[int, Path]]:
    """Worker indexes and log files for this launch: the lowest indexes whose log does not exist yet,
    each file created exclusively. Two launches at once on one study never share an index or a log,
    and a relaunch keeps the earlier launches' logs (a failed trial's traceback stays readable)."""
    claimed: list[tuple[int, Path]] = []
    index = 0
    while len(claimed) < workers:
        path = log_dir / f"worker-{index}.log"
        try:
            path.open("xb").close()  # O_EXCL: exactly one launcher creates it
        except FileExistsError:
            pass
        except OSError as error:
            raise InputError(f"cannot create the worker log {path}: {error.strerror}; free space on that disk, "
                             f"or pass --runs-dir a folder you can write") from error
        else:
            claimed.append((index, path))
        index += 1
    return claimed


def _start_worker(index: int, *, config: StudyConfig, storage_url: str, artifact_dir: Path, runs_dir: Path,
                  device: str, threads: int, heartbeat_interval: int | None) -> subprocess.Popen:
    command, env = worker_command(
        index, config=config, storage_url=storage_url, artifact_dir=artifact_dir, runs_dir=runs_dir,
        device=device, threads=threads, heartbeat_interval=heartbeat_interval,
    )
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        # A session of its own keeps the terminal's Ctrl-C away from workers (the launcher
        # stops them in order); the parent-death signal stops them if the launcher is killed.
        start_new_session=True, preexec_fn=_terminate_with_parent,
    )


def worker_command(index: int, *, config: StudyConfig, storage_url: str, artifact_dir: Path, runs_dir: Path,
                   device: str, threads: int, heartbeat_interval: int | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of worker ``index``; a storage password goes by environment."""
    storage_url, password = split_password(storage_url)
    command = [
        sys.executable, "-m", "spheroid_hpo", *worker_arguments(
            config=config, storage_url=storage_url, artifact_dir=artifact_dir, runs_dir=runs_dir, device=device,
            threads=threads, heartbeat_interval=heartbeat_interval,
        ), "--worker-index", str(index),
    ]
    # Each BLAS/OpenMP pool would otherwise start one thread per core in every worker.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if password is not None:
        env["PGPASSWORD"] = password
    return command, env


def worker_arguments(*, config: StudyConfig, storage_url: str, artifact_dir: Path, runs_dir: Path, device: str,
                     threads: int, heartbeat_interval: int | None) -> list[str]:
    """``worker --study ...``: the arguments after the program, the same for `launch` and a SLURM job.

    ``storage_url`` must come without its password (see ``split_password``).
    """
    arguments = [
        "worker", "--study", config.name, "--storage", storage_url, "--artifacts", str(artifact_dir),
        "--runs-dir", str(runs_dir), "--device", device, "--threads", str(threads),
    ]
    if config.data.path is not None:
        arguments += ["--data", str(config.data.path)]
    if config.timeout is not None:
        arguments += ["--timeout", str(config.timeout)]
    if heartbeat_interval is not None:
        arguments += ["--heartbeat-interval", str(heartbeat_interval)]
    return arguments


def _terminate_with_parent() -> None:
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_workers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_progress(studies, processes: list[subprocess.Popen], started: float, console: Console) -> None:
    """Without a terminal (CI logs, nohup), print one line whenever a trial changes state."""
    last = None
    while True:
        running = any(process.poll() is None for process in processes)
        progress = summarize_studies(studies)
        counts = [(row.complete, row.pruned, row.failed, row.running) for row in progress]
        if counts != last:
            last = counts
            console.print(f"[{time.monotonic() - started:5.0f} s] " + "; ".join(
                f"{row.architecture}: {row.done}/{row.budget} done ({row.complete} ok, {row.pruned} pruned, "
                f"{row.failed} failed), {row.running} running, best "
                + (f"{row.best_value:.3f}" if row.best_value is not None else "-")
                for row in progress
            ), highlight=False, soft_wrap=True)
        if not running:
            return
        time.sleep(POLL_SECONDS)


def _live_view(studies, processes: list[subprocess.Popen], started: float):
    alive = sum(process.poll() is None for process in processes)
    elapsed = time.monotonic() - started
    status = Text(f"{alive}/{len(processes)} workers running, {elapsed:.0f} s elapsed (Ctrl-C stops cleanly)")
    return Group(progress_table(summarize_studies(studies)), status)


def log_console(*, stderr: bool = False) -> Console:
    """A rich console that wraps lines only on a terminal.

    Rich wraps at 80 columns when the output is a pipe or a file, which split an
    error naming a long log folder across two lines of a CI log (and a test that
    looked for "belongs to another run" failed under a long temp folder). In a log,
    one message stays one line whatever its length.
    """
    console = Console(stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console


def print_launch_summary(summary: LaunchSummary, console: Console | None = None) -> int:
    """Print the final table and where the results are; return the exit code for the CLI."""
    console = console or log_console()
    console.print(progress_table(summary.progress, title=f"study {summary.study_name}"))
    finished = sum(row.done for row in summary.progress)
    url = masked_url(summary.storage_url)
    if summary.interrupted:
        console.print(
            f"stopped after {summary.seconds:.0f} s with {finished} trials finished; "
            f"resume with the same command (finished trials are kept, interrupted ones go on from their checkpoints)"
        )
    else:
        console.print(f"finished {finished} trials in {summary.seconds:.0f} s")
    console.print(f"results: storage {url}, artifacts {summary.artifact_dir}/")
    console.print(f"dashboard: spheroid-hpo dashboard --storage {url} --artifacts {summary.artifact_dir}")
    console.print(f"report:    spheroid-hpo report --storage {url} --study {summary.study_name}")
    failed = [(code, log, error) for code, log, error
              in zip(summary.worker_exit_codes, summary.worker_logs, summary.worker_errors)
              if code not in (0, None, -signal.SIGTERM)]
    if failed and not summary.interrupted:
        reasons = "; ".join(f"{log.name}: {error or worker_failure(log, code)}" for code, log, error in failed)
        console.print(f"[red]error: {len(failed)} worker(s) exited with an error ({escape(reasons)}); "
                      f"see the logs in {summary.log_dir}/[/]", highlight=False, soft_wrap=True)
        return 1
    # A study whose every trial failed has no result: "finished" with exit 0 would hide that.
    hopeless = [row for row in summary.progress if row.failed and not row.complete and not row.pruned]
    if hopeless and not summary.interrupted:
        for row in hopeless:
            console.print(f"[red]error: every trial of {row.architecture} failed ({row.failed}); last reason: "
                          f"{escape(row.fail_reason or 'unknown')}; see the logs in {summary.log_dir}/[/]",
                          highlight=False)
        return 1
    return 130 if summary.interrupted else 0


def worker_failure(log: Path, code: int) -> str:
    """Why a worker that printed no error line ended: its exit code and the last line of its log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    last = next((line.strip() for line in reversed(lines) if line.strip()), None)
    return f"exit code {code}, last line: {last}" if last else f"exit code {code}, nothing in its log"


def progress_table(progress: list[ArchitectureProgress], *, title: str = "") -> Group:
    """One row per architecture with its trial counts, then each best trial's parameters."""
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("architecture", no_wrap=True)
    for column in ("done", "ok", "pruned", "failed", "running", "img/s", "best F1"):
        table.add_column(column, justify="right", no_wrap=True)
    best_lines = []
    for row in progress:
        table.add_row(
            row.architecture,
            f"{row.done}/{row.budget if row.budget is not None else '?'}",
            str(row.complete),
            str(row.pruned),
            str(row.failed),
            str(row.running),
            f"{row.images_per_second:.0f}" if row.images_per_second else "-",
            f"{row.best_value:.3f}" if row.best_value is not None else "-",
        )
        if row.best_trial is not None:
            # A study whose search space fixes every value has no params to show.
            params = f", {format_params(row.best_params)}" if row.best_params else ""
            best_lines.append(
                f"best {row.architecture}: trial #{row.best_trial}, val macro-F1 {row.best_value:.3f}{params}"
            )
    return Group(table, *(Text(line) for line in best_lines))

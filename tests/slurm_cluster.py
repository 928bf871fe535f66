"""A single-node SLURM cluster on this machine, for tests (import as `from slurm_cluster import ...`).

Debian's `slurm-wlm` and `munge` are installed with apt-get when missing (as root). The test's
own munged (on a socket of its own), slurmctld and slurmd start from a minimal slurm.conf written
to the test's folder, with free ports; clients find it through SLURM_CONF. Every daemon started
here is stopped on exit, by its process id; nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APT_PACKAGES = ("slurm-wlm", "munge")
MUNGE_KEY = Path("/etc/munge/munge.key")


class ClusterUnavailable(Exception):
    """SLURM cannot be installed or started here; the message says why in one line."""


@dataclass(frozen=True)
class Cluster:
    conf: Path
    env: dict[str, str]  # os.environ plus SLURM_CONF: what every client command needs
    log_dir: Path

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def job_records(self, job_id: str) -> dict[str, dict[str, str]]:
        """``scontrol show job``'s fields for each task of array job ``job_id``, keyed ``JOB_TASK``."""
        text = self.run("scontrol", "-o", "show", "job", job_id).stdout
        records = {}
        for line in text.splitlines():
            fields = dict(re.findall(r"(\w[\w/:]*)=(\S*)", line))
            if "ArrayTaskId" in fields:
                records[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = fields
        return records

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
                         for path in sorted(self.log_dir.glob("*.log")))


def install_if_missing() -> bool:
    """Install slurm-wlm and munge with apt-get when a daemon is missing; True when it installed them."""
    if all(shutil.which(program) for program in ("slurmctld", "slurmd", "munged", "sbatch")):
        return False
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ClusterUnavailable("SLURM is not installed and this is not root with apt-get "
                                 f"(apt-get install -y {' '.join(APT_PACKAGES)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()[-300:]}")
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> tuple[str, int, int]:
    """This machine's node name, CPUs and memory (MB) as `slurmd -C` sees them."""
    text = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", text))
    try:
        return fields["NodeName"], int(fields["CPUs"]), int(fields["RealMemory"])
    except (KeyError, ValueError):
        raise ClusterUnavailable(f"slurmd -C printed no node line: {text.strip()[:200]!r}") from None


def _write_conf(folder: Path, *, munge_socket: Path) -> Path:
    node, cpus, memory = _node_line()
    for name in ("state", "spool", "log"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    # No systemd and mixed cgroups here: track processes by parentage, no task plugin; no
    # accounting database, so final states come from scontrol or the jobcomp file.
    conf.write_text(f"""\
ClusterName=spheroidtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={folder / 'state'}
SlurmdSpoolDir={folder / 'spool'}
SlurmctldPidFile={folder / 'slurmctld.pid'}
SlurmdPidFile={folder / 'slurmd.pid'}
SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}
SlurmdLogFile={folder / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
ReturnToService=2
MailProg=/bin/true
JobCompType=jobcomp/filetxt
JobCompLoc={folder / 'log' / 'jobcomp.txt'}
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def _munged() -> Iterator[Path]:
    """A munged of the test's own, on a socket in a fresh folder under /run; yields the socket."""
    if not MUNGE_KEY.is_file():
        raise ClusterUnavailable(f"no munge key at {MUNGE_KEY} (mungekey --create, as the munge user)")
    folder = Path("/run") / f"spheroid-hpo-munge-{secrets.token_hex(4)}"
    # munged refuses a socket folder others can write to, and runs as the munge user.
    folder.mkdir(mode=0o755)
    shutil.chown(folder, "munge", "munge")
    sock, pid_file = folder / "munge.socket", folder / "munged.pid"
    try:
        result = subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", f"--socket={sock}", f"--pid-file={pid_file}",
             f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munged.seed'}"],
            capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {result.stderr.strip()[-300:]}")
        _wait(pid_file.is_file, timeout=10, what="munged's pid file")
        yield sock
    finally:
        if pid_file.is_file():
            _stop(int(pid_file.read_text().strip()))
        shutil.rmtree(folder, ignore_errors=True)


def _stop(pid: int, *, grace: float = 15) -> None:
    """SIGTERM process ``pid`` (not a child of ours: munged forks away), then SIGKILL it after ``grace`` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def single_node_cluster(folder: Path) -> Iterator[Cluster]:
    """munged, slurmctld and slurmd for this machine as one node; every job cancelled and each daemon stopped after."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting SLURM's daemons needs root (munged runs as the munge user)")
    folder.mkdir(parents=True, exist_ok=True)
    daemons: list[subprocess.Popen] = []
    with _munged() as munge_socket:
        conf = _write_conf(folder, munge_socket=munge_socket)
        cluster = Cluster(conf=conf, env={**os.environ, "SLURM_CONF": str(conf)}, log_dir=folder / "log")
        try:
            # -D: in the foreground, so these are the daemons' own process ids to stop.
            node = _node_line()[0]
            for command in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", node]):
                log = open(folder / "log" / f"{command[0]}.out", "wb")
                daemons.append(subprocess.Popen(command, env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True))
                log.close()

            def node_idle() -> bool:
                if any(daemon.poll() is not None for daemon in daemons):
                    raise ClusterUnavailable("a SLURM daemon exited at start:\n" + cluster.logs())
                states = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
                return states == ["idle"]

            _wait(node_idle, timeout=60, what="sinfo to show the node idle")
            yield cluster
        finally:
            if daemons and daemons[0].poll() is None:
                cluster.run("scancel", "--full", "--partition=test", check=False)
                with contextlib.suppress(ClusterUnavailable):
                    _wait(lambda: not cluster.run("squeue", "-h", check=False).stdout.strip(), timeout=60,
                          what="the cancelled jobs to end")
            for daemon in reversed(daemons):
                daemon.terminate()
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()

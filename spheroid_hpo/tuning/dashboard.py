"""``spheroid-hpo dashboard``: optuna-dashboard on the study storage, in the browser.

The dashboard reads the storage the workers write (SQLite in WAL mode lets it read
while they run) and the artifact folder they upload into, so every trial page shows
its learning curves and confusion matrix as images. It binds to the loopback
interface unless told otherwise: optuna-dashboard has no login, and anyone who
reaches it can rename, delete or add studies.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard
from rich.console import Console
from rich.markup import escape

from spheroid_hpo.defaults import RUNS_DIR
from spheroid_hpo.errors import InputError
from spheroid_hpo.tuning.storage import masked_url, open_artifact_store, open_storage, require_existing_sqlite
from spheroid_hpo.tuning.studies import find_study_family
from spheroid_hpo.tuning.workspace import Workspace

LOCALHOST = "127.0.0.1"
DEFAULT_PORT = 8080


def on_every_interface(host: str) -> bool:
    """Whether binding to ``host`` listens on every interface: the unspecified address in any spelling.

    Comparing with "0.0.0.0" and "::" missed "0" (inet_aton reads it as 0.0.0.0) and "::ffff:0.0.0.0",
    which listened on the LAN without the warning.
    """
    if not host:
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)}
    except (socket.gaierror, UnicodeError):  # a name, not an address: names of every interface are not a thing
        return False
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return True
    return False


def serve_dashboard(
    *,
    storage_url: str | None = None,
    study: str | None = None,
    artifact_dir: Path | None = None,
    host: str = LOCALHOST,
    port: int = DEFAULT_PORT,
    runs_dir: Path = RUNS_DIR,
    console: Console | None = None,
) -> None:
    """Serve optuna-dashboard for the storage until Ctrl-C or SIGTERM.

    The storage defaults to the study's ``runs/<study>/study.db`` and the artifact folder
    to ``runs/<study>/artifacts``; with neither ``study`` nor ``artifact_dir`` the storage
    must hold exactly one study family, whose folder is used. ``port=0`` picks a free port.
    """
    console = console or Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    if storage_url is None and study is None:
        default = Workspace.default_storage_url("NAME", runs_dir=runs_dir)
        raise InputError(f"pass --storage URL or --study NAME (which reads {default})")
    url = storage_url or Workspace.default_storage_url(study, runs_dir=runs_dir)
    require_existing_sqlite(url)
    storage = open_storage(url, heartbeat_interval=None)
    if study is not None or artifact_dir is None:
        study = find_study_family(storage, study)[0].name
    # With --artifacts and no --study the storage may hold several studies: no workspace to resolve.
    if artifact_dir is None:
        artifact_dir = Workspace.of(study, runs_dir=runs_dir).artifact_dir
    artifact_dir = Path(artifact_dir)
    artifact_store = None
    if artifact_dir.is_dir():
        artifact_store = open_artifact_store(artifact_dir)
    else:
        errors.print(
            f"[yellow]warning: artifact folder {escape(str(artifact_dir))} does not exist, so trial pages show no "
            "curves or confusion matrices; pass --artifacts DIR (the folder the workers wrote)[/]"
        )

    server = _bind(optuna_dashboard.wsgi(storage, artifact_store=artifact_store), host=host, port=port)
    if on_every_interface(host):
        errors.print(
            f"[yellow]warning: the dashboard listens on every network interface ({escape(host or '0.0.0.0')}): "
            f"anyone who reaches http://{escape(socket.gethostname())}:{server.server_port}/dashboard can read, "
            f"rename and delete the studies; use --host {LOCALHOST} and an SSH tunnel unless the network is trusted[/]"
        )
    console.print(
        f"dashboard for {escape(masked_url(url))}"
        + (f" with artifacts from {escape(str(artifact_dir))}" if artifact_store else "")
    )
    console.print(f"open [bold]{escape(browser_url(host, server.server_port))}[/] (Ctrl-C stops it)")
    _serve_until_stopped(server)
    console.print("dashboard stopped")


def browser_url(host: str, port: int) -> str:
    """The address to open for a server bound to ``host``: loopback when bound to every interface."""
    if on_every_interface(host):
        host = LOCALHOST
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/dashboard"


class _QuietHandler(WSGIRequestHandler):
    """The page polls the API every few seconds; one log line per request would bury the terminal."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
        pass


class _Server(ThreadingMixIn, WSGIServer):
    # Requests run on daemon threads, so a page still loading never holds up the stop.
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _bind(app, *, host: str, port: int) -> WSGIServer:
    server_class = _Server6 if ":" in host else _Server
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(
            f"cannot listen on {host}:{port}: {reason}; pass a free --port (0 picks one) or another --host"
        ) from error


def _stop(signum, frame):
    raise KeyboardInterrupt


def _serve_until_stopped(server: WSGIServer) -> None:
    """Serve in this thread; Ctrl-C or SIGTERM ends it and frees the port."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()

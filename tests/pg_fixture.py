"""A throw-away PostgreSQL cluster for the tests (and benchmarks) on 127.0.0.1.

`start_cluster` runs ``initdb`` and ``pg_ctl start`` from Debian's ``postgresql``
package as an unprivileged user (PostgreSQL refuses to run as root), with its data
and socket directory in a fresh temporary directory, trust authentication and a free
loopback port; `PgCluster.stop` stops it and deletes the directory.

As a pytest plugin (``pytest_plugins = ["pg_fixture"]``) it provides the
session-scoped `pg_cluster` fixture (one cluster per test session, skipped with the
install command when the server binaries or psycopg are missing) and `pg_url`, a
fresh database per test.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_SERVER = "apt-get install -y postgresql"
INSTALL_DRIVER = "pip install 'psycopg[binary]'"
SERVER_USER_CANDIDATES = ("postgres", "pgtest")
TEST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "200",
}


def pg_bin_dir() -> str | None:
    """Directory of the newest installed server binaries (initdb, pg_ctl), or None."""
    found = sorted(
        (d for d in glob.glob(PG_BIN_GLOB) if os.path.exists(f"{d}/initdb")),
        key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0,
    )
    return found[-1] if found else None


def missing_reason() -> str | None:
    """Why a cluster cannot be started here (naming the install command), or None."""
    if pg_bin_dir() is None:
        return f"PostgreSQL server binaries not found: {INSTALL_SERVER}"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"psycopg not installed: {INSTALL_DRIVER}"
    return None


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str:
    """An unprivileged account to run the server as (created when missing)."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name
    for name in SERVER_USER_CANDIDATES:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "pgtest"],
        check=True,
        capture_output=True,
    )
    return "pgtest"


@dataclass(slots=True)
class PgCluster:
    """A running throw-away cluster.

    Attributes
    ----------
    root : temporary directory holding ``data/`` and the socket.
    port : TCP port on 127.0.0.1.
    user : database superuser (the account that ran initdb).
    bin_dir : directory of the server binaries.
    """

    root: str
    port: int
    user: str
    bin_dir: str
    _as_user: tuple[str, ...] = ()
    _counter: Iterator[int] = itertools.count(1)

    def url(self, dbname: str = "postgres", **params: str) -> str:
        """``postgresql://USER@127.0.0.1:PORT/DBNAME`` with query parameters."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        base = f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"
        return base + (f"?{query}" if query else "")

    def create_database(self, prefix: str = "t") -> str:
        """Create a fresh empty database and return its URL."""
        import psycopg

        name = f"{prefix}{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database` (closing its sessions)."""
        import psycopg

        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        """Run pg_ctl on this cluster as the server user."""
        return subprocess.run(
            [
                *self._as_user,
                f"{self.bin_dir}/pg_ctl",
                "-D",
                f"{self.root}/data",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        self.pg_ctl("stop", "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(settings: Mapping[str, str] = TEST_SETTINGS) -> PgCluster:
    """initdb + start a cluster on a free loopback port; raise RuntimeError on failure.

    Parameters
    ----------
    settings : ``postgresql.conf`` settings (the defaults trade durability for
        speed: fine for a throw-away cluster).
    """
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise RuntimeError(f"PostgreSQL server binaries not found: {INSTALL_SERVER}")
    user = _server_user()
    root = tempfile.mkdtemp(prefix="pgtest-")
    as_user: tuple[str, ...] = ()
    if os.getuid() == 0:
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ("runuser", "-u", user, "--")
    port = _free_port()
    cluster = PgCluster(root, port, user, bin_dir, as_user)
    init = subprocess.run(
        [
            *as_user,
            f"{bin_dir}/initdb",
            "-D",
            f"{root}/data",
            "-U",
            user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip()}")
    opts = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-c port={port}",
            f"-c unix_socket_directories={root}",
            *(f"-c {k}={v}" for k, v in settings.items()),
        ]
    )
    start = cluster.pg_ctl("start", "-w", "-t", "60", "-l", f"{root}/log", "-o", opts)
    if start.returncode != 0:
        log = ""
        if os.path.exists(f"{root}/log"):
            with open(f"{root}/log") as fh:
                log = fh.read()[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stderr.strip()} {log}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throw-away PostgreSQL cluster per test session (skips when unavailable)."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = start_cluster()
    yield cluster
    try:
        import storage_pg

        storage_pg.close_readers()
    except ImportError:
        pass
    cluster.stop()


@pytest.fixture()
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """URL of a fresh empty database on the session cluster, dropped afterwards."""
    url = pg_cluster.create_database()
    yield url
    try:
        import storage_pg

        storage_pg.close_readers()
    except ImportError:
        pass
    pg_cluster.drop_database(url)

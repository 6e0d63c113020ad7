"""A real PostgreSQL server on loopback, from Debian's `postgresql` package: a throw-away
one for the store tests, or a kept one for the local scaled stack (`tfmesh up --scaled`).

`PostgresServer.start` runs `initdb` (once) and `pg_ctl start` on a data directory,
listening on 127.0.0.1 with trust auth on loopback. A throw-away server (no `root` given)
lives in a temp directory on a free port with durability turned off (fsync, synchronous
commit, full-page writes) so start-up and tests are fast; a kept one lives under `root`,
keeps its port in `root/port` and its durability. PostgreSQL refuses
to run as root, so under euid 0 every server command runs as the `postgres` system user
through `runuser`, with the data and socket directories owned by it. `stop` shuts the
server down and removes the directory. Missing binaries raise `PostgresUnavailable`,
whose message says to run `make setup`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from shared.ports import free_ports

DEFAULT_BINARIES = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what to do about it."""


def find_binaries(pattern: str = DEFAULT_BINARIES) -> Path:
    """The newest installed PostgreSQL's bin directory (one holding initdb and pg_ctl)."""
    candidates = [
        Path(found)
        for found in glob.glob(pattern)
        if (Path(found) / "initdb").is_file() and (Path(found) / "pg_ctl").is_file()
    ]
    if not candidates:
        raise PostgresUnavailable(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {pattern}: "
            "run `make setup`, which installs Debian's postgresql package"
        )

    def major_version(bin_dir: Path) -> tuple[int, ...]:
        version = bin_dir.parent.name
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    return max(candidates, key=major_version)


class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path | None = None) -> None:
        self.bin_dir = bin_dir
        self.port = 0
        self.kept = root is not None
        self._root: Path | None = root
        self._as_server_user: list[str] = []

    @property
    def data_dir(self) -> Path:
        assert self._root is not None, "server not started"
        return self._root / "data"

    def _run(self, *args: str) -> None:
        command = [*self._as_server_user, *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
                f"{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        log_file = self._root / "server.log" if self._root else None
        if log_file is None or not log_file.is_file():
            return ""
        return "\nserver log:\n" + log_file.read_text(errors="replace")[-2000:]

    def start(self) -> None:
        if self._root is None:
            # Not pytest's tmp_path: its parent is 0700 root, which the postgres user
            # cannot enter.
            self._root = Path(tempfile.mkdtemp(prefix="tfmesh-postgres-"))
        socket_dir = self._root / "socket"
        socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root needs `runuser` to drop to postgres")
            try:
                owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"no {SERVER_USER!r} system user: run `make setup` (Debian's postgresql "
                    "package creates it)"
                ) from None
            blocked = _unreachable_parent(self._root, owner)
            if blocked is not None:
                raise PostgresUnavailable(
                    f"PostgreSQL runs as the {SERVER_USER!r} user, which cannot enter {blocked}: "
                    "choose a TFMESH_HOME it can reach, or give that directory o+x"
                )
            for path in (self._root, socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as_server_user = ["runuser", "-u", SERVER_USER, "--"]
        if (self.data_dir / "PG_VERSION").is_file():
            self._start_server(socket_dir)
            return
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SERVER_USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        self._start_server(socket_dir)

    def _start_server(self, socket_dir: Path) -> None:
        assert self._root is not None
        port_file = self._root / "port"
        if self.kept and port_file.is_file():
            self.port = int(port_file.read_text())
        else:
            (self.port,) = free_ports(1)
            port_file.write_text(str(self.port))
        fast = [] if self.kept else ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        options = " ".join(
            f"-c {option}"
            for option in [
                "listen_addresses=127.0.0.1",
                f"port={self.port}",
                f"unix_socket_directories={socket_dir}",
                *fast,
                "shared_buffers=16MB",
                "max_connections=200",
            ]
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self._root / "server.log"),
            "--options",
            options,
            "--wait",
            "--timeout",
            str(START_TIMEOUT_S),
        )

    def stop(self) -> None:
        if self._root is None:
            return
        if os.geteuid() == 0 and not self._as_server_user:
            self._as_server_user = ["runuser", "-u", SERVER_USER, "--"]
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(self.data_dir),
                "--mode",
                "fast",
                "--wait",
            )
        if not self.kept:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def create_named_database(self, name: str) -> None:
        """Create database `name` unless it exists (the local stack's, one per service)."""
        with self._admin() as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for `database` on this server."""
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=SERVER_USER, dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        """A new empty database with a unique name; returns the name."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _unreachable_parent(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above `path` that `user` may not enter, if any."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for parent in reversed(path.resolve().parents):
        status = parent.stat()
        if status.st_uid == user.pw_uid:
            allowed = status.st_mode & 0o100
        elif status.st_gid in groups:
            allowed = status.st_mode & 0o010
        else:
            allowed = status.st_mode & 0o001
        if not allowed:
            return parent
    return None

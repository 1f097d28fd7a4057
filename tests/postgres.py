"""A throwaway PostgreSQL cluster for the tests and the liveness benchmark: Debian's server binaries (initdb, pg_ctl in
/usr/lib/postgresql/<version>/bin, not on PATH), a data folder and socket in a temp folder, a free loopback port, trust
authentication; run as the `postgres` user when we are root (the server refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def server_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    if server_bin() is None:
        return "PostgreSQL's server is not installed (apt-get install postgresql; .ci/run does)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver: pip install -e '.[postgres]'"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start the server as postgres"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.bin, self.port = server_bin(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        if os.geteuid() == 0:  # the server runs as postgres: it must own its folders
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # a file, not a pipe: a server started by pg_ctl keeps its stdout open, and reading a pipe would never end
        with tempfile.TemporaryFile("w+") as out:
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=120).returncode
            out.seek(0)
            if code != 0:
                log = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"{tool} failed: {out.read()[-2000:]}{log}")

    def start(self) -> Cluster:
        # fsync off: a throwaway cluster trades durability for speed on a busy 2-core machine
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart")

    def create_db(self, name: str) -> str:
        """A fresh database; returns its SQLAlchemy URL."""
        import psycopg

        # autocommit: CREATE DATABASE cannot run inside a transaction
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as db:
            db.execute(f'create database "{name}"')
        return self.url(name)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped (a test stopped it)
        shutil.rmtree(self.root, ignore_errors=True)

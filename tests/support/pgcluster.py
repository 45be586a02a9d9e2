"""A throwaway PostgreSQL cluster a test can stop and start: `initdb` on a free local port.

The machine's shared PostgreSQL must never be stopped by a test, so outage tests get their own
cluster. initdb refuses to run as root; under root the binaries run as the `postgres` user on a
temporary folder owned by it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.services import _unavailable, free_port

PG_BIN_ENV = "LIFECYCLE_TEST_PG_BIN"
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
PG_USER = "postgres"


class PgCluster:
    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port
        self._prefix = ["runuser", "-u", run_as, "--"] if run_as else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [*self._prefix, str(self.bin_dir / args[0]), *args[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            output = f"{result.stdout}{result.stderr}\n{log}"
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{output}")

    def init(self) -> None:
        # --no-sync and fsync=off: the cluster is thrown away; its durability is not under test.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options)

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` is an abrupt stop: connections die mid-statement, like a crash."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster, stopped and deleted afterwards; skips (or fails under
    LIFECYCLE_TEST_REQUIRE_SERVICES) when the PostgreSQL server binaries are missing."""
    bin_dir = Path(os.environ.get(PG_BIN_ENV, DEFAULT_PG_BIN))
    if not (bin_dir / "initdb").exists() or not (bin_dir / "pg_ctl").exists():
        _unavailable(f"PostgreSQL server binaries not found in {bin_dir} (set {PG_BIN_ENV})")
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            _unavailable(f"running as root needs a {PG_USER!r} OS user for initdb")
        if shutil.which("runuser") is None:
            _unavailable("running as root needs `runuser` to start PostgreSQL as postgres")
        run_as = PG_USER
    # Not under pytest's tmp_path: that folder is private to root and postgres could not enter.
    root = Path(tempfile.mkdtemp(prefix="lc-pgcluster-"))
    if run_as:
        user = pwd.getpwnam(run_as)
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster = PgCluster(bin_dir, root, free_port(), run_as)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)

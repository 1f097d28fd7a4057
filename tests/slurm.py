"""A throwaway one-node SLURM cluster for the tests, the SLURM benchmark and `make slurm-demo`: Debian's munged,
mariadbd, slurmdbd, slurmctld and slurmd, all state in a temp folder, on free loopback ports, stopped by their own pids.

Accounting (slurmdbd on MariaDB) is not optional: without `sacct`, submitit cannot see that SLURM cancelled or timed
out a job and waits for it forever. As root without systemd or cgroups: process tracking by /proc, no task plugin.
`python -m tests.slurm up` starts one under outputs/slurm and prints `export SLURM_CONF=...`; `down` stops it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from tests.postgres import free_port

DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "mariadbd", "munged")  # the order they stop in
PACKAGES = "slurmctld slurmd slurm-client munge slurmdbd mariadb-server"


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [d for d in (*DAEMONS, "sbatch", "sacct", "mariadb-install-db") if shutil.which(d) is None]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)}): apt-get install {PACKAGES} (.ci/run does)"
    if os.geteuid() != 0:
        return "the throwaway SLURM cluster runs its daemons as root (SlurmUser=root)"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "no submitit: pip install -e '.[slurm]'"
    return None


def first_run_after_one_epoch(sweep_dir: Path, timeout: float = 300) -> Path:
    """The first run folder under a sweep with one finished epoch (last.pt is written before metrics.csv): the moment
    to end its job mid-trial."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for folder in sorted(p for p in sweep_dir.glob("[0-9]*") if p.is_dir()):
            metrics = folder / "metrics.csv"
            if metrics.exists() and len(metrics.read_text().splitlines()) == 2:  # the header and epoch 1
                return folder
        time.sleep(0.2)
    raise AssertionError(f"no run under {sweep_dir} finished an epoch in {timeout} s")


class Cluster:
    def __init__(self, root: Path | None = None, cpus: int | None = None) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fmnist-slurm-"))
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "etc" / "slurm.conf"
        self.run, self.logs = self.root / "run", self.root / "log"
        self.socket, self.db_socket = self.root / "munge" / "munge.socket", self.root / "mysql" / "mysqld.sock"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._mariadbd: subprocess.Popen | None = None  # our child: reaped when it stops, not left a zombie

    def _sh(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done

    def _wait(self, what: str, ready) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if ready():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"timed out waiting for {what} (logs in {self.logs})")

    def start(self) -> Cluster:
        for d in ("etc", "munge", "state", "spool", "mysql", "run", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        ctld, slurmd, dbd, db = free_port(), free_port(), free_port(), free_port()
        self._write_conf(ctld, slurmd, dbd)
        self._sh(
            "munged", "--force", f"--key-file={key}", f"--socket={self.socket}", f"--pid-file={self.run}/munged.pid",
            f"--log-file={self.logs}/munged.log", f"--seed-file={self.root}/munge/munged.seed",
        )  # fmt: skip
        self._wait("munged", self.socket.exists)
        self._start_accounting(db, dbd)
        self._sh("slurmctld", "-i")  # -i: ignore state left by a cluster that stopped uncleanly
        self._sh("slurmd", "-N", "localhost")  # the node's name, whatever the machine's hostname
        self._wait("an idle node", lambda: "idle" in self._sh("sinfo", "-h", "-o", "%t", check=False).stdout)
        return self

    def _write_conf(self, ctld: int, slurmd: int, dbd: int) -> None:
        mem = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
        self.conf.write_text(
            f"""ClusterName=fmnist
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
SlurmctldPort={ctld}
SlurmdPort={slurmd}
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.run}/slurmctld.pid
SlurmdPidFile={self.run}/slurmd.pid
SlurmctldLogFile={self.logs}/slurmctld.log
SlurmdLogFile={self.logs}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd}
AccountingStoragePass={self.socket}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=60 State=UP
"""
        )

    def _start_accounting(self, db: int, dbd: int) -> None:
        data = self.root / "mysql" / "data"
        opts = ["--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M"]
        if not (data / "mysql").exists():
            self._sh(
                "mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
                "--auth-root-authentication-method=socket", "--skip-test-db", *opts, timeout=120,
            )  # fmt: skip
        with open(self.logs / "mariadbd.out", "w") as out:
            self._mariadbd = subprocess.Popen(
                ["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={self.db_socket}",
                 f"--port={db}", "--bind-address=127.0.0.1", f"--pid-file={self.run}/mariadbd.pid",
                 f"--log-error={self.logs}/mariadbd.log", *opts],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        sql = ["mariadb", "--no-defaults", "-S", str(self.db_socket), "-u", "root", "-e"]
        self._wait("mariadbd", lambda: self._sh(*sql, "select 1", check=False).returncode == 0)
        self._sh(
            *sql,
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
        )
        dbd_conf = self.conf.with_name("slurmdbd.conf")  # slurmdbd reads it beside $SLURM_CONF
        dbd_conf.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.socket}
DbdHost=localhost
DbdPort={dbd}
SlurmUser=root
PidFile={self.run}/slurmdbd.pid
LogFile={self.logs}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
        )
        dbd_conf.chmod(0o600)  # slurmdbd refuses a file others can read
        self._sh("slurmdbd")
        self._wait("slurmdbd", lambda: self._sh("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0)
        if "fmnist" not in self._sh("sacctmgr", "-n", "list", "cluster", "format=cluster").stdout:
            self._sh("sacctmgr", "-i", "add", "cluster", "fmnist")

    def cancel_run(self, folder: Path, storage: str | None = None, signal: str | None = None) -> str:
        """scancel the SLURM job that trains the run in `folder`: a job-array worker's task (its trial's record in
        `storage`), or else a submitit job (its id in the run's Hydra config); with `signal`, only send it that signal
        (to its steps, where SLURM sends its own). Returns the job id."""
        if storage:
            from fmnist.search import liveness
            from fmnist.search.storage import open_storage

            study = optuna.load_study(study_name="fmnist-study-grid", storage=open_storage(storage))
            job = study.trials[int(folder.name)].system_attrs[liveness.SLURM_TASK]
        else:
            job = OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.id
        self._sh("scancel", *([f"--signal={signal}"] if signal else []), job)
        return job

    def pid(self, daemon: str) -> int | None:
        f = self.run / f"{daemon}.pid"
        try:
            return int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.pid("slurmctld"):
            self._sh("scancel", "--user=root", check=False, timeout=10)
        for daemon in DAEMONS:
            pid = self.pid(daemon)
            if pid is None:
                continue
            try:
                os.kill(pid, 15)
                if self._mariadbd and self._mariadbd.pid == pid:
                    self._mariadbd.wait(10)
                for _ in range(80):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, 9)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            (self.run / f"{daemon}.pid").unlink(missing_ok=True)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    root = Path("outputs/slurm").resolve()
    if sys.argv[1:] == ["up"]:
        if why := missing():
            sys.exit(f"error: {why}")
        Cluster(root).stop()  # daemons a previous `up` left running
        print(f"export SLURM_CONF={Cluster(root).start().conf}")
    elif sys.argv[1:] == ["down"]:
        Cluster(root).stop()
    else:
        sys.exit("usage: python -m tests.slurm up|down")

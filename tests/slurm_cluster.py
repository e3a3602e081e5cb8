"""A real single-node SLURM cluster on 127.0.0.1 for the tests: munge, slurmctld and slurmd
from Debian's packages, one node with a GPU GRES backed by a fake character device, no
accounting (job state comes from squeue; MinJobAge keeps finished jobs listed).

The configuration goes to /etc/slurm (files there are put back afterwards, but not a killed
test cluster's): srun inside a job finds it only there, because Snakemake's job step drops
SLURM_* variables."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from debian_packages import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONFIG_DIR = Path("/etc/slurm")
MARKER = "# the avtokens tests' cluster (tests/slurm_cluster.py), removed when it stops"


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None. Installs the packages when it can:
    as root with apt-get the cluster must run, so a failed install raises (a test that
    skipped here would let CI pass without SLURM)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root, to start munge and the SLURM daemons"
    if all(shutil.which(cmd) for cmd in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it"
    failure = apt_install(*PACKAGES)
    if failure:
        raise RuntimeError(f"installing SLURM failed: {failure}")
    return None


class SlurmCluster:
    """Start with `with SlurmCluster(folder) as cluster:`; everything started is stopped on
    exit, also when the test fails. `cluster.env` is the environment for SLURM clients."""

    def __init__(self, folder: Path, gpus: int = 1):
        self.folder = Path(folder)
        self.gpus = gpus
        self.host = socket.gethostname().split(".")[0]
        self.pids: list[Path] = []
        self.written: list[Path] = []
        self.saved: dict[str, bytes] = {}

    def __enter__(self) -> SlurmCluster:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        f = self.folder
        for sub in ("state", "spool", "munge", "log", "run"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = f / "munge" / "munge.socket"
        self._daemon(["munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                      f"--pid-file={f / 'run' / 'munged.pid'}", f"--log-file={f / 'log' / 'munged.log'}",
                      f"--seed-file={f / 'munge' / 'seed'}"], f / "run" / "munged.pid")  # fmt: skip
        devices = []
        for i in range(self.gpus):
            device = f / f"fakegpu{i}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
            devices.append(str(device))
        self._install_config("gres.conf", f"NodeName={self.host} Name=gpu File={','.join(devices)}\n")
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        cpus = os.cpu_count() or 1
        ports = _free_ports(2)
        # Jobs share the cores (up to four a core, OverSubscribe=FORCE:4): the tests' jobs are
        # small and mostly wait for the client's status checks, so two runs can go at once.
        self._install_config(
            "slurm.conf",
            f"""ClusterName=avtokens-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={f / "state"}
SlurmdSpoolDir={f / "spool"}
SlurmctldPidFile={f / "run" / "slurmctld.pid"}
SlurmdPidFile={f / "run" / "slurmd.pid"}
SlurmctldLogFile={f / "log" / "slurmctld.log"}
SlurmdLogFile={f / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
ReturnToService=2
MpiDefault=none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""",
        )
        self.env = {**os.environ, "SLURM_CONF": str(CONFIG_DIR / "slurm.conf")}
        self._daemon(["slurmctld"], f / "run" / "slurmctld.pid")
        self._daemon(["slurmd"], f / "run" / "slurmd.pid")
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self.run(["sinfo", "-h", "-o", "%t"]).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(1)
        raise RuntimeError(f"SLURM node never became idle (state {state!r}); logs in {f / 'log'}")

    def _install_config(self, name: str, text: str) -> None:
        """Write /etc/slurm/`name`, keeping what was there to put back, unless that is the
        leftover of a test cluster that was killed: put back, it would point every SLURM
        client at a controller that is gone, and each Snakemake start (its SLURM plugin asks
        squeue and sacct) would wait about 9 s for it."""
        path = CONFIG_DIR / name
        CONFIG_DIR.mkdir(parents=True, exist_ok=True)
        if path.exists() and name not in self.saved and MARKER not in path.read_text(errors="replace"):
            self.saved[name] = path.read_bytes()
        self.written.append(path)
        path.write_text(f"{MARKER}\n{text}")

    def _daemon(self, cmd: list[str], pid_file: Path) -> None:
        self.pids.append(pid_file)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=getattr(self, "env", None))
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} did not start: {proc.stderr.strip()}")
        deadline = time.time() + 20
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.2)

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env)

    def jobs(self) -> list[dict]:
        """Every job the controller remembers, as key=value dictionaries."""
        out = self.run(["scontrol", "show", "job", "-o"]).stdout
        jobs = []
        for line in out.splitlines():
            fields = {}
            for token in line.split():
                key, _, value = token.partition("=")
                fields[key] = value
            if "JobId" in fields:
                jobs.append(fields)
        return jobs

    def __exit__(self, *exc) -> None:
        for pid_file in reversed(self.pids):
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass  # not started, or already gone
        for path in self.written:
            if path.name in self.saved:
                path.write_bytes(self.saved[path.name])
            else:
                path.unlink(missing_ok=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports

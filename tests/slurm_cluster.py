"""A real SLURM cluster of two nodes on this one machine, for the tests (Debian's slurm-wlm and munge).

`start()` writes a slurm.conf under a temporary folder (state, spool, logs and
munge's key and socket there too, free ports), starts munged, slurmctld and
one slurmd per node (`slurmd -N n1`, `-N n2`: both on this host, reached at
127.0.0.1 on ports of their own), and waits until `sinfo` shows both nodes
idle. `Cluster.stop()` cancels every job, then ends every daemon it started,
by pid, and removes the folder. The packages are installed with apt-get when
missing and this runs as root (`.ci/run` installs them the same way); where
they cannot be, `start()` returns the reason, and the tests skip with it
(under CI they fail: a skipped cluster there would hide a broken install step).

What it is not: one host, no GPUs, no InfiniBand, gloo over loopback. Jobs run
as root (SlurmUser=root, ProctrackType=proctrack/pgid, TaskPlugin=task/none).
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import debian_packages

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "sinfo", "scontrol")
NODES = ("n1", "n2")
CPUS_PER_NODE = 2
START_TIMEOUT = 60  # seconds until both nodes are idle

CONF = """\
ClusterName=cifarbench
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=2
InactiveLimit=0
{nodes}
PartitionName=debug Nodes={node_names} Default=YES MaxTime=INFINITE State=UP
"""
NODE = "NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} State=UNKNOWN"


SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the daemons live in sbin, which a user's PATH may lack


def _find(name):
    return shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)


def _missing():
    return [b for b in BINARIES if _find(b) is None]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    def __init__(self, root):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.procs = []  # every daemon started, in start order
        # the SLURM commands (sbatch, squeue, ...) on PATH, after what PATH had
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), PATH=f"{os.environ['PATH']}:{SYSTEM_PATH}")

    def run(self, *args, check=True, timeout=60):
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def _daemon(self, name, *args):
        with open(self.root / "log" / f"{name}.out", "w") as log:  # the daemon keeps its own copy of the file
            proc = subprocess.Popen(
                [_find(args[0]), *args[1:]], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def logs(self):
        """The daemons' log tails, for a failure message."""
        out = []
        for path in sorted((self.root / "log").glob("*")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def start(self):
        root = self.root
        for sub in ("state", "log", "munge-key", "munge-socket", *(f"spool-{n}" for n in NODES)):
            (root / sub).mkdir()
        (root / "munge-key").chmod(0o700)
        key = root / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = root / "munge-socket" / "socket"
        self._daemon(
            "munged",
            "munged",
            "--foreground",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={root / 'munge-key' / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={root / 'munge-key' / 'munged.seed'}",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_path.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"munged did not start\n{self.logs()}")
            time.sleep(0.1)
        host = socket.gethostname()
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        nodes = "\n".join(NODE.format(name=n, host=host, port=p, cpus=CPUS_PER_NODE) for n, p in zip(NODES, node_ports))
        self.conf.write_text(
            CONF.format(
                host=host,
                ctld_port=ctld_port,
                munge_socket=socket_path,
                root=root,
                nodes=nodes,
                node_names=",".join(NODES),
            )
        )
        self._daemon("slurmctld", "slurmctld", "-D", "-i", "-f", str(self.conf))
        for n in NODES:
            self._daemon(f"slurmd-{n}", "slurmd", "-D", "-N", n, "-f", str(self.conf))
        while True:
            states = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).split()
            if states[1::2] == ["idle"] * len(NODES):
                return self
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not come up ({dead or states})\n{self.logs()}")
            time.sleep(0.3)

    def wait(self, job_id, timeout):
        """Until job `job_id` (every task of an array) has left the queue."""
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-j", str(job_id), "-o", "%i", check=False).strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still queued or running after {timeout} s\n{self.logs()}")
            time.sleep(0.5)

    def stop(self):
        """Cancel every job, then end every daemon this started (by pid), newest first; remove the folder."""
        if any(p.poll() is None for p in self.procs[1:]):
            self.run("scancel", "--user", "root", check=False)
            deadline = time.monotonic() + 20
            while self.run("squeue", "-h", "-o", "%i", check=False).strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start():
    """(Cluster, None) once both nodes are idle, or (None, the reason there is none)."""
    if _missing():
        problem = debian_packages.install(PACKAGES, _missing)
        if problem:
            return None, f"no SLURM to test with ({problem}); install the Debian packages {' and '.join(PACKAGES)}"
    if os.geteuid() != 0:
        return None, "the test cluster runs its daemons as root (SlurmUser=root), and this is not root"
    # munged wants every folder above its socket searchable by all: not pytest's 0700 tmp_path
    root = tempfile.mkdtemp(prefix="cb-slurm-", dir="/tmp")
    os.chmod(root, 0o755)
    cluster = Cluster(root)
    try:
        return cluster.start(), None
    except BaseException:
        cluster.stop()
        raise

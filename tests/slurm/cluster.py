"""A throw-away, single-node SLURM cluster for the ``slurm`` test tier.

:class:`SlurmCluster` brings up a real ``munged`` + ``slurmctld`` + ``slurmd`` (Debian's ``slurm-wlm``
and ``munge``) on this machine, with every file it writes inside one work directory, on fresh ports, and
tears it all down again. Nothing under ``/etc``, ``/var`` or ``/run`` is written; the packages' own
services are never started. Layout of the work directory::

    munge/   munge.key (0400, owned by root, which munged runs as), munged.seed, munged.pid;
             munge/socket/munge.socket (slurm finds it through AuthInfo=socket=...)
    etc/     slurm.conf, plugstack.conf (empty)
    state/   slurmctld's StateSaveLocation          spool/  slurmd's SlurmdSpoolDir
    run/     pid files; harness.pids lists the daemons this harness started
    log/     slurmctld.log, slurmd.log, <daemon>.stdout (munged -F logs only there),
             jobcomp.log (jobcomp/filetxt: one line per job end or requeue)
    bin/     sacct: ``sacct --completion`` (see below)

The daemons run in the foreground as children of the test process (``munged --foreground``,
``slurmctld -D``, ``slurmd -D``). :meth:`SlurmCluster.stop` cancels the jobs, stops the daemons by pid,
then kills any job process left behind (one whose environment holds ``SLURM_CONF=<this conf>``). Daemons
of a session that crashed before its teardown are found through ``run/harness.pids`` by
:func:`reap_stale_clusters`; each cluster takes new ports, so a stale one never blocks a new one.

Client commands (``sbatch``, ``squeue``, ``scontrol``, ``scancel``, ``srun``) find the cluster through
``SLURM_CONF``: pass :attr:`SlurmCluster.env` to a subprocess, or call :meth:`SlurmCluster.activate`,
which sets it in ``os.environ`` (submitit runs the commands with the current environment).

Job state without slurmdbd: plain ``sacct`` only answers "Slurm accounting storage is disabled".
submitit 1.5.4 polls state only with ``sacct -o JobID,State,NodeList --parsable2 -j ID`` (no squeue
fallback); on error it logs "Bypassing sacct error", keeps the state ``UNKNOWN`` and still sees a job as
done once its result pickle exists, so ``job.result()`` works, but a job killed before writing that
pickle would look unfinished forever. ``bin/sacct`` (first on PATH in :attr:`~SlurmCluster.env`) runs the
real ``sacct --completion``, which reads the jobcomp log: submitit then sees ``COMPLETED`` / ``FAILED`` /
``CANCELLED`` once a job ended (``PENDING`` right after a requeue, ``UNKNOWN`` while running).
"""

from __future__ import annotations

import json
import os
import shutil
import signal as _signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: Debian packages that provide the daemons and the client commands.
APT_PACKAGES = ("slurm-wlm", "munge")
#: Executables the harness needs (daemons live in /usr/sbin).
REQUIRED_BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
)
#: Job states after which a job will not run again (short and long forms, as squeue/scontrol print them).
TERMINAL_STATES = frozenset(
    {
        "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
        "OUT_OF_MEMORY", "CD", "CA", "F", "TO", "NF", "PR", "BF", "DL", "OOM",
    }
)  # fmt: skip

_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_PID_REGISTRY = "harness.pids"
_FOREIGN_SLURM_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")


class SlurmHarnessError(RuntimeError):
    """The cluster could not be installed, started or queried."""


def _search_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [d for d in _SBIN_DIRS if d not in parts])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_search_path())


def missing_binaries() -> list[str]:
    return [name for name in REQUIRED_BINARIES if _which(name) is None]


def ensure_packages() -> None:
    """Install ``slurm-wlm`` and ``munge`` with apt when a needed executable is absent (root only)."""
    missing = missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmHarnessError(
            f"SLURM test tier: {', '.join(missing)} not found; install the Debian packages "
            f"{' and '.join(APT_PACKAGES)} (apt-get install -y {' '.join(APT_PACKAGES)}) or run as root"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SlurmHarnessError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    still_missing = missing_binaries()
    if still_missing:
        raise SlurmHarnessError(f"installed {APT_PACKAGES} but still missing: {still_missing}")


def free_port() -> int:
    """A TCP port nobody listens on now (slurmctld/slurmd bind on all addresses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _real_memory_mb(margin_mb: int = 1024) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                total_mb = int(line.split()[1]) // 1024
                return max(512, total_mb - max(margin_mb, total_mb // 20))
    raise SlurmHarnessError("MemTotal not found in /proc/meminfo")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def _kill_and_wait(pids: Iterable[int], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after ``timeout`` seconds."""
    pids = [p for p in pids if p != os.getpid()]
    for sig in (_signal.SIGTERM, _signal.SIGKILL):
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (timeout if sig == _signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            for pid in pids:  # reap our own children so that they do not linger as zombies
                with suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            pids = [p for p in pids if _pid_alive(p)]
            if not pids:
                return
            time.sleep(0.1)


def _kill_registered(registry: Path) -> list[int]:
    """Kill the live pids listed in a harness registry whose command line names its work directory."""
    workdir = registry.parent.parent
    try:
        pids = [int(p) for p in json.loads(registry.read_text()).values()]
    except (OSError, ValueError):
        pids = []
    mine = [p for p in pids if _pid_alive(p) and str(workdir) in _cmdline(p)]
    if mine:
        _kill_and_wait(mine)
    registry.unlink(missing_ok=True)
    return mine


def reap_stale_clusters(search_root: Path, pattern: str = f"**/run/{_PID_REGISTRY}") -> list[int]:
    """Kill the daemons of harness clusters that a crashed session left under ``search_root``.

    Only pids listed in a ``run/harness.pids`` (matched by ``pattern``) whose command line still names
    that cluster's work directory are killed. Returns the pids that were signalled.
    """
    if not search_root.is_dir():
        return []
    return [pid for registry in search_root.glob(pattern) for pid in _kill_registered(registry)]


class SlurmCluster:
    """A single-node SLURM cluster (partition ``debug``) whose files all live in ``workdir``.

    Use as a context manager, or call :meth:`start` / :meth:`stop` (both idempotent).
    """

    partition = "debug"

    def __init__(
        self,
        workdir: Path,
        *,
        cpus: int | None = None,
        real_memory_mb: int | None = None,
        start_timeout: float = 45.0,
        cred_expire: int = 10,
        sacct_from_jobcomp: bool = True,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.node_name = socket.gethostname().split(".")[0]
        self.cpus = cpus or len(os.sched_getaffinity(0))  # what `nproc` prints
        self.real_memory_mb = real_memory_mb or _real_memory_mb()
        self.start_timeout = start_timeout
        self.cred_expire = cred_expire
        self.sacct_from_jobcomp = sacct_from_jobcomp
        self.ctld_port = 0
        self.slurmd_port = 0
        self._procs: dict[str, subprocess.Popen] = {}
        self._saved_environ: dict[str, str | None] | None = None
        self.startup_s: float | None = None  # wall time of the last start(), munged to node idle

        d = self.workdir
        self.munge_dir = d / "munge"
        self.munge_socket = d / "munge" / "socket" / "munge.socket"
        self.munge_key = d / "munge" / "munge.key"
        self.conf_dir = d / "etc"
        self.conf = d / "etc" / "slurm.conf"
        self.state_dir = d / "state"
        self.spool_dir = d / "spool"
        self.run_dir = d / "run"
        self.log_dir = d / "log"
        self.jobcomp_log = d / "log" / "jobcomp.log"
        self.bin_dir = d / "bin"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def start(self) -> SlurmCluster:
        """Write the munge key and ``slurm.conf``, start the daemons, wait until the node is idle."""
        if self.running:
            return self
        missing = missing_binaries()
        if missing:
            raise SlurmHarnessError(f"missing {missing}: call ensure_packages() first")
        started = time.monotonic()
        _kill_registered(self.run_dir / _PID_REGISTRY)  # a crashed start() in this workdir
        dirs = (
            self.munge_socket.parent,
            self.conf_dir,
            self.state_dir,
            self.spool_dir,
            self.run_dir,
            self.log_dir,
        )
        for sub in dirs:
            sub.mkdir(parents=True, exist_ok=True)
        # munged checks that its socket directory is reachable by everybody
        self.munge_socket.parent.chmod(0o755)
        try:
            self._start_munge()
            self._write_conf()
            if self.sacct_from_jobcomp:
                self._write_sacct_wrapper()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
            self._wait_for(self._ctld_answers, "slurmctld to answer `scontrol ping`")
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node_name])
            self._wait_for(lambda: self.node_state() in ("idle", "IDLE"), f"node {self.node_name} to be idle")
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Cancel all jobs, stop slurmd, slurmctld and munged, kill any job process left over."""
        if self._procs.get("slurmctld") is not None and self._procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", f"--partition={self.partition}"], check=False, timeout=15)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and self.active_jobs():
                    time.sleep(0.5)
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                _kill_and_wait([proc.pid])
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
        _kill_registered(self.run_dir / _PID_REGISTRY)
        if self.conf.exists():
            _kill_and_wait(self._job_processes())
        self.deactivate()

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands and submitit: os.environ + ``SLURM_CONF`` (+ sbin, bin/ on PATH).

        ``SLURM_*`` / ``SBATCH_*`` / ``SRUN_*`` / ``SALLOC_*`` inherited from an enclosing allocation (a test
        session that itself runs in a SLURM job) are dropped: sbatch and srun would read them as options.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_SLURM_PREFIXES)}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = self._client_path()
        return env

    def activate(self) -> None:
        """Point ``os.environ`` at this cluster (as :attr:`env`); :meth:`deactivate` restores it."""
        if self._saved_environ is None:
            keys = [k for k in os.environ if k.startswith(_FOREIGN_SLURM_PREFIXES)] + ["SLURM_CONF", "PATH"]
            self._saved_environ = {k: os.environ.get(k) for k in keys}
        env = self.env
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
        os.environ.update(env)

    def deactivate(self) -> None:
        if self._saved_environ is None:
            return
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_environ = None

    @contextmanager
    def activated(self) -> Iterator[SlurmCluster]:
        self.activate()
        try:
            yield self
        finally:
            self.deactivate()

    # ------------------------------------------------------------------ client helpers
    def run(
        self, cmd: list[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess:
        """Run a client command against this cluster; raises with its output on failure when ``check``."""
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise SlurmHarnessError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def sbatch(self, *args: str) -> str:
        """``sbatch --parsable ARGS``; returns the job id."""
        out = self.run(["sbatch", "--parsable", *args]).stdout.strip()
        return out.split(";")[0]

    def node_state(self) -> str:
        proc = self.run(["sinfo", "-h", "-N", "-n", self.node_name, "-o", "%t"], check=False, timeout=10)
        return proc.stdout.strip().rstrip("*~#!%$@^-")

    def node_info(self) -> str:
        return self.run(["scontrol", "show", "node", self.node_name], check=False).stdout

    def active_jobs(self) -> list[str]:
        proc = self.run(["squeue", "-h", "-o", "%i"], check=False, timeout=10)
        return proc.stdout.split()

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict ({} once slurmctld forgot the job, after MinJobAge)."""
        proc = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False, timeout=10)
        if proc.returncode != 0:
            return {}
        info: dict[str, str] = {}
        for token in proc.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                info[key] = value
        return info

    def job_state(self, job_id: str) -> str:
        """The job's state (``PENDING``, ``RUNNING``, ``COMPLETED``...): scontrol, else the jobcomp log."""
        state = self.job_info(job_id).get("JobState")
        if state:
            return state
        completed = self.completed_jobs().get(str(job_id))
        return completed["JobState"] if completed else "UNKNOWN"

    def completed_jobs(self) -> dict[str, dict[str, str]]:
        """The jobcomp/filetxt log: JobId -> fields, for every job that ended (the last record wins)."""
        records: dict[str, dict[str, str]] = {}
        if not self.jobcomp_log.exists():
            return records
        for line in self.jobcomp_log.read_text().splitlines():
            fields = dict(tok.partition("=")[::2] for tok in line.split() if "=" in tok)
            if "JobId" in fields:
                records[fields["JobId"]] = fields
        return records

    def wait_for_jobs(
        self, job_ids: Iterable[str], timeout: float = 120.0, poll: float = 0.5
    ) -> dict[str, str]:
        """Wait until every job is in a terminal state; returns job id -> state. Raises on timeout."""
        pending = {str(j) for j in job_ids}
        states: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while True:
            for job_id in sorted(pending):
                states[job_id] = self.job_state(job_id)
                if states[job_id] in TERMINAL_STATES:
                    pending.discard(job_id)
            if not pending:
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs not finished after {timeout:.0f}s: {states}\n{self.debug_report()}")
            time.sleep(poll)

    def wait_for_state(self, job_id: str, states: Iterable[str], timeout: float = 60.0) -> str:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while (state := self.job_state(job_id)) not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {state}, not in {wanted} after {timeout:.0f}s")
            time.sleep(0.3)
        return state

    def requeue(self, job_id: str) -> None:
        """``scontrol requeue``: SLURM kills the job (SIGTERM, SIGKILL after KillWait) and queues it again."""
        self.run(["scontrol", "requeue", str(job_id)])

    def signal(self, job_id: str, sig: str = "USR2", *, batch: bool = False, full: bool = False) -> None:
        """``scancel --signal=SIG ID``: by default to the job's steps only (the srun-launched tasks).

        That is what SLURM does at ``--signal=USR2@delay`` before a time limit, and what submitit's task
        handles (checkpoint, ``scontrol requeue``, exit). ``batch=True`` (``--batch``) signals only the
        batch shell, which USR2 kills: the job FAILS and is not requeued. ``full=True`` (``--full``)
        signals the shell and the steps: the requeue races the shell's death.
        """
        cmd = ["scancel", f"--signal={sig}"]
        if batch:
            cmd.append("--batch")
        if full:
            cmd.append("--full")
        self.run([*cmd, str(job_id)])

    def cancel(self, job_id: str) -> None:
        self.run(["scancel", str(job_id)], check=False)

    def debug_report(self, tail: int = 40) -> str:
        """Node/queue state and the log tails, for failure messages."""
        parts = [self.node_info(), self.run(["squeue", "-a"], check=False).stdout]
        for log in (self.log_dir / "slurmctld.log", self.log_dir / "slurmd.log"):
            if log.exists():
                parts.append(
                    f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-tail:])
                )
        return "\n".join(parts)

    # ------------------------------------------------------------------ internals
    def _client_path(self) -> str:
        path = _search_path()
        return f"{self.bin_dir}{os.pathsep}{path}" if self.sacct_from_jobcomp else path

    def _write_sacct_wrapper(self) -> None:
        """``bin/sacct``: the real sacct, reading the jobcomp/filetxt log (``--completion``).

        Without slurmdbd plain ``sacct`` only says "Slurm accounting storage is disabled"; with
        ``--completion`` it answers from the jobcomp log, so submitit (which polls ``sacct -o
        JobID,State,NodeList --parsable2 -j ID``) sees the final state of finished jobs (and ``PENDING``
        for a requeued one), and a job that died without a result pickle is reported, not waited on
        forever. Running jobs are not in that log: submitit sees them as ``UNKNOWN`` (not done).
        """
        real = _which("sacct")
        if real is None or Path(real).parent == self.bin_dir:
            return
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin_dir / "sacct"
        wrapper.write_text(f'#!/bin/sh\nexec {real} --completion "$@"\n')
        wrapper.chmod(0o755)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.log_dir / f"{name}.stdout", "ab")  # noqa: SIM115 - lives as long as the daemon
        env = self.env
        self._procs[name] = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        registry = self.run_dir / _PID_REGISTRY
        registry.write_text(json.dumps({k: p.pid for k, p in self._procs.items()}))

    def _job_processes(self) -> list[int]:
        """slurmstepd and job processes of this cluster: their environment holds SLURM_CONF=<our conf>."""
        entry = f"SLURM_CONF={self.conf}".encode()
        me = os.getpid()
        return [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and int(p) != me and _environ_has(int(p), entry) and _pid_alive(int(p))
        ]

    def _start_munge(self) -> None:
        # munged runs as root here (--force lets it accept a socket path whose parents are not
        # world-executable, e.g. pytest's 0700 tmp dirs); the key must be owned by munged's user, 0400.
        if not self.munge_key.exists():
            fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(1024))
        os.chmod(self.munge_key, 0o400)
        self.munge_socket.unlink(missing_ok=True)
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}",
                f"--pid-file={self.munge_dir / 'munged.pid'}",
                f"--log-file={self.munge_dir / 'munged.log'}",
                f"--seed-file={self.munge_dir / 'munged.seed'}",
            ],
        )

        def munge_works() -> bool:
            if not self.munge_socket.exists():
                return False
            cred = subprocess.run(
                ["munge", "-n", "-S", str(self.munge_socket)], capture_output=True, timeout=5
            )
            if cred.returncode != 0:
                return False
            back = subprocess.run(
                ["unmunge", "-S", str(self.munge_socket)], input=cred.stdout, capture_output=True, timeout=5
            )
            return back.returncode == 0

        self._wait_for(
            munge_works, "munged to encode/decode a credential", log=self.log_dir / "munged.stdout"
        )

    def _ctld_answers(self) -> bool:
        proc = self.run(["scontrol", "ping"], check=False, timeout=10)
        return proc.returncode == 0 and "UP" in proc.stdout

    def _wait_for(self, predicate, what: str, log: Path | None = None) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not predicate():
            dead = [name for name, p in self._procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"timed out after {self.start_timeout:.0f}s"
                detail = (
                    log.read_text(errors="replace")[-3000:] if log and log.exists() else self.debug_report()
                )
                raise SlurmHarnessError(f"waiting for {what}: {why}\n{detail}")
            time.sleep(0.2)

    def _write_conf(self) -> None:
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()
        (self.conf_dir / "plugstack.conf").write_text("")
        node = self.node_name
        lines = {
            "ClusterName": "museglit",
            # name(address): no DNS needed for the controller or the node
            "SlurmctldHost": f"{node}(127.0.0.1)",
            "SlurmctldPort": self.ctld_port,
            "SlurmdPort": self.slurmd_port,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # cred_expire also delays a requeued job's restart (BeginTime = requeue + cred_expire + 1;
            # the default is 120 s)
            "AuthInfo": f"socket={self.munge_socket},cred_expire={self.cred_expire}",
            "StateSaveLocation": self.state_dir,
            "SlurmdSpoolDir": self.spool_dir,
            "SlurmctldPidFile": self.run_dir / "slurmctld.pid",
            "SlurmdPidFile": self.run_dir / "slurmd.pid",
            "SlurmctldLogFile": self.log_dir / "slurmctld.log",
            "SlurmdLogFile": self.log_dir / "slurmd.log",
            "SlurmctldDebug": "info",
            "SlurmdDebug": "info",
            "PlugStackConfig": self.conf_dir / "plugstack.conf",
            "MailProg": "/bin/true",
            # no cgroups: linuxproc tracks job processes through /proc parentage
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SwitchType": "switch/none",
            "MpiDefault": "none",
            # cores and memory are consumable: two 1-CPU jobs fit on a 2-core node at once
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "DefMemPerCPU": 512,
            # no slurmdbd: finished jobs are appended to a text file instead
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": self.jobcomp_log,
            # run the main and backfill schedulers every few seconds, so that a requeued job restarts as
            # soon as its BeginTime passes (the 60 s / 30 s defaults dominate every requeue test)
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=2,bf_interval=1",
            "JobRequeue": 1,
            "ReturnToService": 2,
            "KillWait": 5,
            "MinJobAge": 60,
            "InactiveLimit": 0,
            "SlurmctldTimeout": 30,
            "SlurmdTimeout": 30,
            "MessageTimeout": 10,
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += (
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN\n"
            f"PartitionName={self.partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.conf.write_text(text)

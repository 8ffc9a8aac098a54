"""Processes of the stack: started in sessions of their own, known by the PID files `up` wrote, and
stopped only through them (never by name: other stacks run beside this one)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

START_TIMEOUT_S = float(os.environ.get("FACESTREAM_START_TIMEOUT_S", "90"))
STOP_GRACE_S = 30.0


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def pid_alive(pidfile: Path) -> int | None:
    """The PID in the file if that process runs. A zombie does not count: a killed server whose parent (init
    here, `up` having exited) has not reaped it yet holds no port and no file."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def rss_mib(pid: int) -> float | None:
    """Resident memory from /proc/<pid>/status (VmRSS, kB), the figure the machine actually pays."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def refuse_taken(ports: list[int], hint: str) -> None:
    for p in ports:
        if port_open(p):
            sys.exit(f"[stack] port {p} is taken by a process this script did not start; {hint}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def fail(what: str, logfile: Path) -> None:
    sys.exit(f"[stack] {what}\n--- last lines of {logfile} ---\n{tail(logfile)}")


def launch(cmd: list[str], workdir: Path, pidfile: Path) -> int:
    """Start `cmd` in a session of its own (so a terminal's Ctrl-C does not reach it) and record its PID."""
    with open(workdir / "stdout.log", "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return proc.pid


def wait_until(check: Callable[[], bool], what: str, watched: list[tuple[Path, Path]],
               timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll `check` until it holds; fail early, with that process's log, when a watched (pidfile, logfile)
    process exits, and with the first log when the time is up."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        for pidfile, logfile in watched:
            if pid_alive(pidfile) is None:
                fail(f"{what}: the process of {pidfile.parent.name} exited during start", logfile)
        try:
            if check():
                return
        except Exception as e:  # not answering yet
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    fail(f"{what}: no answer within {timeout_s:.0f}s (last error: {last or 'none'})", watched[0][1])


def stop_all(named: list[tuple[str, Path]]) -> None:
    """SIGTERM every live process at once, then SIGKILL what is left after the grace period. At once, because
    the nodes of a KRaft cluster stopped one by one lose their quorum and the last waits out its timeout."""
    live = [(name, pf, pid) for name, pf in named if (pid := pid_alive(pf)) is not None]
    for name, pf in named:
        if pid_alive(pf) is None:
            log(f"{name} not running")
            pf.unlink(missing_ok=True)
    for _, _, pid in live:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(pid_alive(pf) for _, pf, _ in live):
        time.sleep(0.2)
    for name, pf, pid in live:
        how = "stopped"
        if pid_alive(pf):
            os.kill(pid, signal.SIGKILL)
            how = f"killed after {STOP_GRACE_S:.0f}s"
        pf.unlink(missing_ok=True)
        log(f"{name} {how} (pid {pid})")


def kill_now(name: str, pidfile: Path, timeout_s: float = 10.0) -> None:
    """SIGKILL, as a crash would, and wait until the process is gone (its ports closed)."""
    pid = pid_alive(pidfile)
    if pid is None:
        log(f"{name} not running")
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pidfile):
        time.sleep(0.05)
    pidfile.unlink(missing_ok=True)
    log(f"{name} killed (SIGKILL, pid {pid})")

"""Running the benchmarks' children: every measurement runs in a subprocess
(`spacy train`, `spacy evaluate`, a worker of workers.py), from a fresh
interpreter, with its output in a log file, its peak memory polled and a time
limit. Shared by run_bench.py and grid.py; imports neither spaCy nor torch."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
WORKERS_PY = Path(__file__).resolve().parent / "workers.py"
T0 = time.time()


def log(msg: str) -> None:
    """A progress line with the time since the start."""
    el = time.time() - T0
    print(f"[{int(el // 60):3d}m{int(el % 60):02d}s] {msg}", flush=True)


def qjoin(cmd: Sequence[Any]) -> str:
    """A command as one line that a shell runs as it was."""
    return " ".join(shlex.quote(str(c)) for c in cmd)


def rel(p: Path | str) -> str:
    """A path relative to the repository where it is inside it (reports)."""
    p = Path(p)
    try:
        return str(p.resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def proc_status_kb(pid: int | str, key: str) -> Optional[int]:
    """A field of /proc/PID/status in kB (Linux), None where there is none."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def vm_hwm_mb() -> Optional[float]:
    """This process's peak resident set (VmHWM) in MB."""
    kb = proc_status_kb("self", "VmHWM")
    return kb / 1024 if kb else None


class PeakRSS(threading.Thread):
    """Polls /proc/<pid>/status of a child for VmHWM (its peak RSS).

    VmHWM is the high-water mark of the process's current address space, so
    it is monotonic and not inflated by the parent's memory (unlike
    ru_maxrss of a forked child, which inherits the parent's peak).
    """

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            hwm = proc_status_kb(self.pid, "VmHWM")
            if hwm:
                self.peak_kb = max(self.peak_kb, hwm)
            self._stop_evt.wait(self.interval)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join()
        return self.peak_kb


def run_cmd(cmd: Sequence[Any], log_path: Path, timeout: Optional[float] = None,
            env: Optional[dict] = None, cwd: Optional[Path] = None) -> Dict[str, Any]:
    """Runs cmd with its output to log_path; returns rc, wall time, CPU time,
    peak RSS and the load average around it. On timeout the child gets SIGINT
    (so spacy train saves model-last), then SIGKILL a minute later."""
    cmd = [str(c) for c in cmd]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as logf:
        logf.write("$ " + qjoin(cmd) + "\n")
        logf.flush()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd)
        poller = PeakRSS(p.pid)
        poller.start()
        load0 = os.getloadavg()[0]
        timed_out = False
        deadline = t + timeout if timeout else None
        term_at = None
        while True:
            # wait4 gives this child's own CPU time (user + sys)
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if deadline and now > deadline and term_at is None:
                timed_out = True
                term_at = now
                # SIGINT: KeyboardInterrupt, so spacy train's `finally` saves
                # model-last; model-best is whatever the last dev evaluation kept
                p.send_signal(signal.SIGINT)
            elif term_at is not None and now > term_at + 60:
                p.kill()
            time.sleep(0.05)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        peak = poller.stop()
    return {"rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mb": peak / 1024 if peak else None, "timed_out": timed_out,
            "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "log": rel(log_path)}


def tail(path: Path, n: int = 15) -> str:
    """The last n lines of a log, for error messages."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def child_env(threads: Optional[int]) -> dict:
    """The environment of every child: CPU only; with `threads`, that many
    OpenMP/MKL/OpenBLAS threads and torch threads (read by workers.py)."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[k] = str(threads)
        env["BENCH_TORCH_THREADS"] = str(threads)
    return env


def run_worker(name: str, args: dict, log_path: Path, env: dict,
               timeout: Optional[float] = None, python: str = sys.executable) -> Dict[str, Any]:
    """Runs `python bench/workers.py NAME JSON` in a fresh interpreter (this
    one's, or `python`: another virtual environment's) and reads the JSON it
    writes."""
    out_json = log_path.with_suffix(".json")
    if out_json.exists():
        out_json.unlink()
    args = dict(args, _out=str(out_json))
    cmd = [python, str(WORKERS_PY), name, json.dumps(args)]
    res = run_cmd(cmd, log_path, timeout=timeout, env=env, cwd=REPO)
    if res["rc"] != 0 or not out_json.exists():
        raise RuntimeError(f"worker {name} failed (rc={res['rc']}), see {rel(log_path)}:\n"
                           + tail(log_path))
    data = json.loads(out_json.read_text())
    data["_proc"] = res
    return data

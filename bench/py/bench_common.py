"""bench/py/bench_common.py: what every Python twin of a Lua workload shares.

The same output protocol as bench/workloads/common.lua:
    M <metric-id> <number>   |   M <metric-id> n/a   |   SKIP <reason>
Tasks are module-level functions, so ProcessPoolExecutor can pickle them
under any start method.
"""
import gc
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

now = time.perf_counter


def params():
    p = {}
    for a in sys.argv[1:]:
        k, _, v = a.partition("=")
        try:
            p[k] = int(v)
        except ValueError:
            try:
                p[k] = float(v)
            except ValueError:
                p[k] = v
    return p


def intlist(s):
    return [int(x) for x in str(s).split(",") if x.strip()]


def emit(metric, value):
    if value is None or value != value:
        print("M %s n/a" % metric, flush=True)
    else:
        print("M %s %.9g" % (metric, value), flush=True)


def rss_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def full_gc():
    gc.collect()
    gc.collect()


def ident(x):
    return x


def gated(path):
    give_up = time.time() + 300
    while not os.path.exists(path):
        if time.time() > give_up:
            raise RuntimeError("bench gate never opened: " + path)
        time.sleep(0.001)
    return True


def sleeper(seconds):
    import threading
    time.sleep(seconds)
    return "%d:%d" % (os.getpid(), threading.get_ident()), rss_kb()


def gate_path():
    import tempfile
    fd, path = tempfile.mkstemp(prefix="lf-bench-gate-")
    os.close(fd)
    os.remove(path)
    return path


def open_gate(path):
    open(path, "w").close()


def remove_gate(path):
    try:
        os.remove(path)
    except OSError:
        pass


def wait_running(f, timeout=30):
    deadline = now() + timeout
    while not (f.running() or f.done()):
        if now() > deadline:
            raise RuntimeError("task never started")
        time.sleep(0.0005)


def start_workers(ex, n, seconds=0.05):
    fs = []
    for _ in range(n):
        f = ex.submit(sleeper, seconds)
        wait_running(f)
        fs.append(f)
    seen = {}
    for f in fs:
        wid, kb = f.result(60)
        seen.setdefault(wid, kb)
    return len(seen), list(seen.values())


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return None
    if n % 2:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def pool(kind, n):
    """A pool of `kind`; "mpi" (lua-futures' MPIPoolExecutor rows) is a
    ProcessPoolExecutor: concurrent.futures has no MPI pool, and
    mpi4py.futures is not what Python users have at hand."""
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=n)
    return ProcessPoolExecutor(max_workers=n)


def cpu_count():
    return os.cpu_count() or 1

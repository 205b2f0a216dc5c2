"""Twin of bench/workloads/memory.lua: RSS of idle workers and of pending
futures behind a blocked worker."""
import bench_common as B


def main():
    p = B.params()
    kind = p.get("pool", "thread")
    workers = p.get("workers", 8)
    pending = p.get("pending", 100000)
    if B.rss_kb() is None:
        print("SKIP no /proc/self/status VmRSS on this system", flush=True)
        return

    B.full_gc()
    before = B.rss_kb()
    ex = B.pool(kind, workers)
    started, rss = B.start_workers(ex, workers, 0.05)
    B.full_gc()
    after = B.rss_kb()
    if kind == "thread":
        B.emit("mem.thread.worker_kb", (after - before) / started)
    else:
        B.emit("mem.process.worker_kb", B.median(rss))
    print("%d workers started" % started)
    ex.shutdown()

    ex = B.pool(kind, 1)
    gate = B.gate_path()
    blocker = ex.submit(B.gated, gate)
    B.wait_running(blocker)
    B.full_gc()
    before = B.rss_kb()
    fs = [ex.submit(B.ident, i) for i in range(1, pending + 1)]
    B.full_gc()
    after = B.rss_kb()
    B.emit("mem.%s.pending_mb" % kind, (after - before) / 1024 * (100000 / pending))
    B.open_gate(gate)
    assert fs[-1].result(300) == pending
    B.remove_gate(gate)
    ex.shutdown()


if __name__ == "__main__":
    main()

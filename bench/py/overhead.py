"""Twin of bench/workloads/overhead.lua: spawn, round trip, queued submit and
map (chunksize 1 and 100) for one pool kind. Note that Python's
ThreadPoolExecutor.map accepts chunksize but ignores it (one future per item);
ProcessPoolExecutor.map honours it."""
import bench_common as B


def main():
    p = B.params()
    kind = p.get("pool", "thread")
    workers = p.get("workers", B.cpu_count())
    ident = B.ident

    def mid(name):
        return kind + "." + name

    start = B.now()
    ex = B.pool(kind, 1)
    assert ex.submit(ident, 1).result() == 1
    B.emit(mid("spawn_ms"), (B.now() - start) * 1e3)

    for i in range(200):
        ex.submit(ident, i).result()
    n = p.get("rt", 10000)
    B.full_gc()
    start = B.now()
    for i in range(n):
        if ex.submit(ident, i).result() != i:
            raise RuntimeError("wrong result")
    B.emit(mid("rt_us"), (B.now() - start) / n * 1e6)

    gate = B.gate_path()
    blocker = ex.submit(B.gated, gate)
    B.wait_running(blocker)
    n = p.get("submit", 100000)
    submit = ex.submit
    B.full_gc()
    start = B.now()
    for i in range(n):
        submit(ident, i)
    elapsed = B.now() - start
    B.open_gate(gate)
    last = ex.submit(ident, -1)
    assert last.result(300) == -1
    assert blocker.result() is True
    B.remove_gate(gate)
    B.emit(mid("submit_us"), elapsed / n * 1e6)
    ex.shutdown()

    ex = B.pool(kind, workers)
    B.start_workers(ex, workers, 0.02)

    def run_map(count, chunksize):
        items = list(range(1, count + 1))
        B.full_gc()
        t0 = B.now()
        seen = 0
        for i, v in enumerate(ex.map(ident, items, chunksize=chunksize), 1):
            seen += 1
            if v != i:
                raise RuntimeError("wrong result")
        t = B.now() - t0
        assert seen == count
        return t / count * 1e6

    run_map(1000, 1)
    B.emit(mid("map1_us"), run_map(p.get("map1", 20000), 1))
    B.emit(mid("map100_us"), run_map(p.get("map100", 100000), 100))
    ex.shutdown()


if __name__ == "__main__":
    main()

"""Twin of bench/workloads/cpu_curve.lua: `tasks` equal CPU-bound tasks,
sequential, then on thread and process pools of w workers (started first).
Each round times the sequential run and then every pool; a speedup is the
round's sequential time over the pool's; the figure is the median over
`inner` rounds."""
import bench_common as B


def work(steps):
    s = 0
    for i in range(1, steps + 1):
        s = (s + i * i) % 1000003
    return s


def main():
    p = B.params()
    n, ntasks = p.get("n", 500000), p.get("tasks", 16)
    counts = B.intlist(p.get("workers", "1,2"))
    inner = p.get("inner", 3)
    configs = []
    for kind in str(p.get("pools", "thread,process")).split(","):
        for w in counts:
            ex = B.pool(kind, w)
            B.start_workers(ex, w, 0.02)
            configs.append(("cpu.%s.w%d" % (kind, w), ex, []))

    expected = work(n)
    seqs = []
    for _ in range(inner):
        t0 = B.now()
        for _ in range(ntasks):
            assert work(n) == expected
        seq = B.now() - t0
        seqs.append(seq)
        for _, ex, speedups in configs:
            start = B.now()
            fs = [ex.submit(work, n) for _ in range(ntasks)]
            for f in fs:
                assert f.result() == expected
            speedups.append(seq / (B.now() - start))

    B.emit(p.get("seq_id", "cpu.seq_ms"), B.median(seqs) * 1e3)
    for mid, ex, speedups in configs:
        ex.shutdown()
        B.emit(mid, B.median(speedups))


if __name__ == "__main__":
    main()

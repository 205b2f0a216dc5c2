"""Twin of bench/workloads/cpu_curve.lua: `tasks` equal CPU-bound tasks,
sequential, then on thread and process pools of w workers (started first)."""
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
    pools = str(p.get("pools", "thread,process")).split(",")
    t0 = B.now()
    expected = None
    for _ in range(ntasks):
        expected = work(n)
    seq = B.now() - t0
    B.emit("cpu.seq_ms", seq * 1e3)
    for kind in pools:
        for w in counts:
            with B.pool(kind, w) as ex:
                B.start_workers(ex, w, 0.02)
                start = B.now()
                fs = [ex.submit(work, n) for _ in range(ntasks)]
                for f in fs:
                    assert f.result() == expected
                t = B.now() - start
            B.emit("cpu.%s.w%d" % (kind, w), seq / t)


if __name__ == "__main__":
    main()

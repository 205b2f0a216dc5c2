"""Twin of bench/workloads/as_completed.lua."""
from concurrent.futures import as_completed

import bench_common as B


def main():
    p = B.params()
    kind = p.get("pool", "thread")
    n = p.get("n", 10000)
    workers = p.get("workers", B.cpu_count())
    with B.pool(kind, workers) as ex:
        B.start_workers(ex, workers, 0.02)
        B.full_gc()
        start = B.now()
        fs = [ex.submit(B.ident, i) for i in range(1, n + 1)]
        count = total = 0
        for f in as_completed(fs):
            count += 1
            total += f.result()
        B.emit(kind + ".asc_total_ms", (B.now() - start) * 1e3)
        assert count == n and total == n * (n + 1) // 2

        B.full_gc()
        start = B.now()
        count = 0
        for _ in as_completed(fs):
            count += 1
        B.emit(kind + ".asc_done_ms", (B.now() - start) * 1e3)
        assert count == n


if __name__ == "__main__":
    main()

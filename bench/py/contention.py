"""Twin of bench/workloads/contention.lua: the default ThreadPoolExecutor()
(map chunksize 1, round trip) and round trips on fresh pools of 2, 4 and 16
workers, median and worst of `runs`; with busy=1 the driver keeps one other
CPU-bound process running and every id starts with "busy."."""
from concurrent.futures import ThreadPoolExecutor

import bench_common as B


def round_trips(ex, n):
    B.full_gc()
    t0 = B.now()
    for i in range(n):
        if ex.submit(B.ident, i).result() != i:
            raise RuntimeError("wrong result")
    return (B.now() - t0) / n * 1e6


def map1(ex, count):
    items = list(range(1, count + 1))
    B.full_gc()
    t0 = B.now()
    seen = 0
    for i, v in enumerate(ex.map(B.ident, items), 1):
        seen += 1
        if v != i:
            raise RuntimeError("wrong result")
    assert seen == count
    return (B.now() - t0) / count * 1e6


def main():
    p = B.params()
    prefix = "busy." if p.get("busy") == 1 else ""
    rt, runs = p.get("rt", 2000), p.get("runs", 15)

    ex = ThreadPoolExecutor()
    map1(ex, 1000)
    B.emit(prefix + "default.map1_us", map1(ex, p.get("map1", 20000)))
    round_trips(ex, 200)
    B.emit(prefix + "default.rt_us", round_trips(ex, rt))
    ex.shutdown()

    p50 = {}
    for w in B.intlist(p.get("workers", "2,4,16")):
        means = []
        for _ in range(runs):
            ex = ThreadPoolExecutor(max_workers=w)
            round_trips(ex, 200)
            means.append(round_trips(ex, rt))
            ex.shutdown()
        means.sort()
        p50[w] = B.median(means)
        B.emit("%srt.w%d.p50_us" % (prefix, w), p50[w])
        B.emit("%srt.w%d.worst_us" % (prefix, w), means[-1])
        if w != 2 and 2 in p50:
            B.emit("%srt.w%d_over_w2" % (prefix, w), p50[w] / p50[2])


if __name__ == "__main__":
    main()

"""Twin of bench/workloads/eventloop.lua: asyncio's loop with a thread pool
(wrap_future, run_in_executor) where the Lua side has futures.luv."""
import asyncio
import statistics
from concurrent.futures import as_completed

import bench_common as B


def stamp():
    return B.now()


async def latency(ex, count):
    loop = asyncio.get_running_loop()
    lat, warm = [], count // 10
    finished = loop.create_future()
    seen = 0

    def next_sample():
        asyncio.wrap_future(ex.submit(stamp)).add_done_callback(on_done)

    def on_done(f):
        nonlocal seen
        now = B.now()
        seen += 1
        if seen > warm:
            lat.append((now - f.result()) * 1e6)
        if seen < count + warm:
            next_sample()
        else:
            finished.set_result(None)

    next_sample()
    await finished
    return statistics.median(lat)


async def awaits(ex, k):
    loop = asyncio.get_running_loop()
    for i in range(1, k + 1):
        assert await loop.run_in_executor(ex, B.ident, i) == i


async def callbacks(ex, n):
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    ran = total = 0

    def count(f):
        nonlocal ran, total
        ran += 1
        total += f.result()
        if ran == n:
            finished.set_result(None)

    for i in range(1, n + 1):
        asyncio.wrap_future(ex.submit(B.ident, i)).add_done_callback(count)
    await finished
    assert total == n * (n + 1) // 2


def main():
    p = B.params()
    workers = p.get("workers", B.cpu_count())
    lat_n, rt_n, n = p.get("lat", 2000), p.get("rt", 2000), p.get("n", 10000)
    with B.pool("thread", workers) as ex:
        B.start_workers(ex, workers, 0.02)
        B.emit("loop.cb_p50_us", asyncio.run(latency(ex, lat_n)))

        rounds, per = 10, max(1, rt_n // 10)
        asyncio.run(awaits(ex, per))
        for i in range(1, per + 1):
            ex.submit(B.ident, i).result()
        t_await = t_block = 0.0
        for _ in range(rounds):
            start = B.now()
            asyncio.run(awaits(ex, per))
            t_await += B.now() - start
            start = B.now()
            for i in range(1, per + 1):
                assert ex.submit(B.ident, i).result() == i
            t_block += B.now() - start
        await_us = t_await / (per * rounds) * 1e6
        blocking_us = t_block / (per * rounds) * 1e6
        B.emit("loop.await_us", await_us)
        B.emit("loop.blocking_us", blocking_us)
        B.emit("loop.await_ratio", await_us / blocking_us)

        per = max(1, n // 5)
        t_cb = t_asc = 0.0
        for _ in range(5):
            B.full_gc()
            start = B.now()
            asyncio.run(callbacks(ex, per))
            t_cb += B.now() - start
            B.full_gc()
            start = B.now()
            fs = [ex.submit(B.ident, i) for i in range(1, per + 1)]
            total = sum(f.result() for f in as_completed(fs))
            t_asc += B.now() - start
            assert total == per * (per + 1) // 2
        cb_us = t_cb / (per * 5) * 1e6
        asc_us = t_asc / (per * 5) * 1e6
        B.emit("loop.cb_us", cb_us)
        B.emit("loop.asc_us", asc_us)
        B.emit("loop.cb_ratio", cb_us / asc_us)


if __name__ == "__main__":
    main()

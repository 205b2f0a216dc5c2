"""Twin of bench/workloads/sharing.lua: a queue streamed from the host to
one task, a 64 MB shared buffer to a task and back, and indexing.

A thread task and the host share a queue.Queue; a process task gets a
multiprocessing.Manager().Queue() (a proxy to a manager process: the usual
way to hand a queue to a ProcessPoolExecutor's tasks). Both end at a None
sentinel, as q:iter() ends at close(). The buffer is a bytearray for a
thread (passed by reference) and a multiprocessing.shared_memory block for
a process (passed by name, attached by the task). The indexing figures are
array.array('d') against a list, for comparison with SharedArray against a
Lua table."""
import array
import multiprocessing
import queue

import bench_common as B


def drain(q):
    total = 0
    while True:
        v = q.get()
        if v is None:
            return total
        total += v


def touch_shm(name):
    from multiprocessing import resource_tracker, shared_memory
    shm = shared_memory.SharedMemory(name=name)
    # Attached, not created here: the tracker must not unlink it at exit.
    resource_tracker.unregister(shm._name, "shared_memory")
    size = shm.size
    shm.close()
    return name, size


def main():
    p = B.params()
    kind = p.get("pool", "thread")
    items, mb, k = p.get("items", 200000), p.get("mb", 64), p.get("k", 20)
    manager = multiprocessing.Manager() if kind == "process" else None
    with B.pool(kind, 1) as ex:
        def stream(n):
            q = queue.Queue() if kind == "thread" else manager.Queue()
            f = ex.submit(drain, q)
            for i in range(1, n + 1):
                q.put(i)
            q.put(None)
            assert f.result(600) == n * (n + 1) // 2

        stream(1000)
        B.full_gc()
        start = B.now()
        stream(items)
        B.emit(kind + ".queue_us", (B.now() - start) / items * 1e6)

        size = mb * 1024 * 1024
        if kind == "thread":
            buf = bytearray(size)
            assert ex.submit(B.ident, buf).result() is buf
            B.full_gc()
            start = B.now()
            for _ in range(k):
                assert ex.submit(B.ident, buf).result() is buf
            B.emit(kind + ".array64_ms", (B.now() - start) / k * 1e3)
        else:
            from multiprocessing import shared_memory
            shm = shared_memory.SharedMemory(create=True, size=size)
            try:
                assert ex.submit(touch_shm, shm.name).result()[0] == shm.name
                B.full_gc()
                start = B.now()
                for _ in range(k):
                    assert ex.submit(touch_shm, shm.name).result()[0] == shm.name
                B.emit(kind + ".array64_ms", (B.now() - start) / k * 1e3)
            finally:
                shm.close()
                shm.unlink()
    if manager is not None:
        manager.shutdown()

    if kind == "thread":
        n = p.get("access", 2000000)
        lst = [0.0] * n
        arr = array.array("d", bytes(8 * n))

        def read(x):
            s = 0
            for i in range(n):
                s += x[i]
            return s

        def write(x):
            for i in range(n):
                x[i] = i

        def best(fn, x):
            b = float("inf")
            for _ in range(3):
                t0 = B.now()
                fn(x)
                b = min(b, B.now() - t0)
            return b / n * 1e9

        B.emit("table.read_ns", best(read, lst))
        B.emit("array.read_ns", best(read, arr))
        B.emit("table.write_ns", best(write, lst))
        B.emit("array.write_ns", best(write, arr))


if __name__ == "__main__":
    main()

"""Twin of bench/workloads/codec.lua: pickle (highest protocol) dumps/loads
of the same values as futures.serialize/deserialize."""
import pickle

import bench_common as B

PROTO = pickle.HIGHEST_PROTOCOL


def small_task(a, b, c):
    return a, b, c


def best_of(reps, fn):
    """Best of reps runs, each after a full collection, the result freed only
    after the clock stops (as in codec.lua)."""
    best = None
    for _ in range(reps):
        B.full_gc()
        t0 = B.now()
        r = fn()
        t = B.now() - t0
        del r
        best = t if best is None or t < best else best
    return best


def main():
    p = B.params()
    items, nbytes, small, k = (p.get("items", 1000000), p.get("bytes", 10000000),
                               p.get("small", 100000), p.get("k", 3))
    t = [i * 7 for i in range(1, items + 1)]
    enc = pickle.dumps(t, PROTO)
    te = best_of(k, lambda: pickle.dumps(t, PROTO))
    td = best_of(k, lambda: pickle.loads(enc))
    assert pickle.loads(enc)[-1] == items * 7
    B.emit("codec.table_enc_ms", te * 1e3)
    B.emit("codec.table_dec_ms", td * 1e3)
    B.emit("codec.table_ms", (te + td) * 1e3)

    s = b"0123456789abcdef" * (nbytes // 16)
    ts = best_of(k, lambda: pickle.loads(pickle.dumps(s, PROTO)))
    B.emit("codec.string_ms", ts * 1e3)

    call = (small_task, 42, 3.5, "key")
    dumps, loads = pickle.dumps, pickle.loads
    for _ in range(1000):
        loads(dumps(call, PROTO))
    t0 = B.now()
    for _ in range(small):
        loads(dumps(call, PROTO))
    B.emit("codec.small_us", (B.now() - t0) / small * 1e6)


if __name__ == "__main__":
    main()

"""Twin of bench/workloads/transfer.lua: a list of `items` ints and `bytes`
bytes sent to a worker and back. A Python thread pool shares the objects (no
copy at all); a process pool pickles them both ways."""
import bench_common as B


def main():
    p = B.params()
    kind = p.get("pool", "thread")
    items, nbytes, k = p.get("items", 1000000), p.get("bytes", 10000000), p.get("k", 3)
    with B.pool(kind, 1) as ex:
        def round_trips(v, check):
            check(ex.submit(B.ident, v).result())
            B.full_gc()
            start = B.now()
            for _ in range(k):
                check(ex.submit(B.ident, v).result())
            return (B.now() - start) / k * 1e3

        t = [i * 7 for i in range(1, items + 1)]

        def check_table(r):
            assert len(r) == items and r[-1] == items * 7
        B.emit(kind + ".xfer_table_ms", round_trips(t, check_table))
        del t
        B.full_gc()

        s = b"0123456789abcdef" * (nbytes // 16)

        def check_string(r):
            assert len(r) == len(s)
        B.emit(kind + ".xfer_string_ms", round_trips(s, check_string))


if __name__ == "__main__":
    main()

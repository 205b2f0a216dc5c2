"""Twin of bench/workloads/primes.lua: the seed's is-prime list, sequential,
then a thread pool and a process pool, each timed from creation to shutdown."""
import math

import bench_common as B

PRIMES = [
    112272535095293, 112582705942171, 112272535095293,
    115280095190773, 115797848077099, 1099726899285419,
]


def is_prime(n):
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False
    limit = int(math.floor(math.sqrt(n)))
    for i in range(3, limit + 1, 2):
        if n % i == 0:
            return False
    return True


def main():
    p = B.params()
    workers = p.get("workers", B.cpu_count())
    t0 = B.now()
    expected = [is_prime(n) for n in PRIMES]
    seq = B.now() - t0
    B.emit("primes.seq_s", seq)
    for kind in ("thread", "process"):
        start = B.now()
        with B.pool(kind, workers) as ex:
            got = list(ex.map(is_prime, PRIMES))
        t = B.now() - start
        assert got == expected
        B.emit("primes.%s_s" % kind, t)
        B.emit("primes.%s_speedup" % kind, seq / t)


if __name__ == "__main__":
    main()

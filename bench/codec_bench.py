"""Pickle figures for bench/codec_bench.lua, on the same data, in the same run.

Prints one line per case: "<case> <encode ms> <decode ms>", the medians of
repeated pickle.dumps / pickle.loads (protocol 5, the C pickler).
usage: python3 bench/codec_bench.py
"""
import gc
import pickle
import statistics
import time


def f(a, b, c):
    return a + b + c


def median_ms(fn, rounds, reps=1):
    times = []
    for _ in range(rounds):
        gc.collect()                 # as the Lua side: no earlier garbage
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times) * 1e3


def case(name, value, rounds, reps=1):
    blob = pickle.dumps(value, protocol=5)
    enc = median_ms(lambda: pickle.dumps(value, protocol=5), rounds, reps)
    dec = median_ms(lambda: pickle.loads(blob), rounds, reps)
    print(f"{name} {enc:.6f} {dec:.6f}", flush=True)


case("ints_1m", list(range(1, 1_000_001)), 9)
case("string_10mb", b"x" * (10 * 1024 * 1024), 9)
case("small_call", (f, 1, 2.5, 3), 21, 20000)

"""The Python benchmark: bitbridge from Python beside in-process ctypes and the Rust API, in one run.

    ./x pybench            # quiet machine, then the same rows with the machine loaded
    ./x pybench --quick    # fewer rounds (what CI runs)

Each row is the median of batches (and the 10th/90th percentiles); per-call rows divide a batch's time by
its calls. The loaded run starts two busy processes per CPU at the same priority (and stops them, whatever
happens) so the rows show what a call costs next to other work.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bitbridge
import numpy as np
from bitbridge import _native, sharedctypes
from bitbridge import ctypes as bct

SOURCE = r"""
int add(int a, int b) { return a + b; }
double sum4(const double *f, int n) {
    double a = 0, b = 0, c = 0, d = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) { a += f[i]; b += f[i + 1]; c += f[i + 2]; d += f[i + 3]; }
    for (; i < n; i++) a += f[i];
    return a + b + c + d;
}
void scale(double *f, int n, double k) { for (int i = 0; i < n; i++) f[i] *= k; }
"""


def build(tmp: Path) -> dict[int, str]:
    src = tmp / "pybench.c"
    src.write_text(SOURCE)
    out = {}
    for bits in (32, 64):
        lib = tmp / f"libpybench{bits}.so"
        subprocess.run(["gcc", f"-m{bits}", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
        out[bits] = str(lib)
    return out


def fmt(s: float) -> str:
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


class Table:
    def __init__(self, title: str) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.title = title

    def add(self, name: str, samples: list[float]) -> float:
        q = statistics.quantiles(samples, n=10) if len(samples) > 1 else samples * 9
        med = statistics.median(samples)
        self.rows.append((name, fmt(med), fmt(q[0]), fmt(q[-1])))
        print(f"  {name}: {fmt(med)}", file=sys.stderr)
        return med

    def print(self) -> None:
        w = max(len(self.title), *(len(r[0]) for r in self.rows))
        print(f"| {self.title:<{w}} |     median |        p10 |        p90 |")
        print(f"|{'-' * (w + 2)}|------------|------------|------------|")
        for name, med, p10, p90 in self.rows:
            print(f"| {name:<{w}} | {med:>10} | {p10:>10} | {p90:>10} |")


def per_call(f: Callable[[], Any], calls: int, batches: int) -> list[float]:
    for _ in range(max(calls // 10, 10)):
        f()
    out = []
    for _ in range(batches):
        t = time.perf_counter()
        for _ in range(calls):
            f()
        out.append((time.perf_counter() - t) / calls)
    return out


def once_each(f: Callable[[], Any], n: int) -> list[float]:
    f()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def run(libs: dict[int, str], quick: bool, tmp: Path | None = None) -> list[Table]:
    calls, batches = (2000, 15) if quick else (20000, 30)
    tables = []

    t = Table("add(int, int) from Python")
    ref = ctypes.CDLL(libs[64])
    ref.add.argtypes, ref.add.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    t.add(
        "baseline: in-process ctypes with argtypes (x86_64 build)",
        per_call(lambda: ref.add(1, 2), calls, batches),
    )
    bare = ctypes.CDLL(libs[64]).add
    t.add("baseline: in-process ctypes without argtypes", per_call(lambda: bare(1, 2), calls, batches))
    for name, bits, opts in (
        ("bitbridge.ctypes, i686 server, shm", 32, {}),
        ("bitbridge.ctypes, i686 server, socket", 32, {"shared_memory": False}),
        ("bitbridge.ctypes, x86_64 server, shm", 64, {}),
    ):
        lib = bct.CDLL(libs[bits], **opts)
        lib.add.argtypes, lib.add.restype = [bct.c_int, bct.c_int], bct.c_int
        f = lib.add
        t.add(name, per_call(lambda f=f: f(1, 2), calls, batches))
        lib.server.shutdown()
    lib = bct.CDLL(libs[32])
    f = lib.function("int add(int a, int b)")
    t.add("bitbridge, i686 server, declared from C", per_call(lambda: f(1, 2), calls, batches))
    lib.server.shutdown()
    rust = [_native.bench_rust_add(libs[32], calls) for _ in range(batches)]
    t.add("Rust API (bitbridge crate), i686 server, shm", rust)
    tables.append(t)

    t = Table("sum of 1M float64 (8 MB) by the library")
    n = 1_000_000
    a = np.arange(n, dtype=np.float64)
    reps = 10 if quick else 30
    ref.sum4.argtypes, ref.sum4.restype = [ctypes.POINTER(ctypes.c_double), ctypes.c_int], ctypes.c_double
    p = a.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
    t.add("baseline: in-process ctypes, numpy array", once_each(lambda: ref.sum4(p, n), reps))
    t.add("baseline: numpy copy of the array (memcpy)", once_each(lambda: a.copy(), reps))
    lib = bct.CDLL(libs[32])
    s = lib.function("double sum4(const double *f, int n)")
    t.add("bitbridge, i686 server, numpy array (const: one copy in)", once_each(lambda: s(a, n), reps))
    rust = _native.bench_rust_sum(libs[32], n, reps)
    t.add("Rust API, i686 server, from a Vec<f64>", rust)
    shared = sharedctypes.RawArray("d", n, target="i686")
    np.frombuffer(shared, dtype=np.float64)[:] = a
    t.add("bitbridge, i686 server, sharedctypes.RawArray (zero copy)", once_each(lambda: s(shared, n), reps))
    sc = lib.function("void scale(double *f, int n, double k)")
    b = a.copy()
    t.add("bitbridge, i686 server, scale in place (in and back)", once_each(lambda: sc(b, n, 1.0), reps))
    lib.server.shutdown()
    tables.append(t)

    t = Table("start-up")
    t.add(
        "bitbridge.ctypes.CDLL(i686 library) and first call",
        once_each(lambda: _first_call(libs[32]), 5 if quick else 20),
    )
    t.add(
        "baseline: spawn and wait for /bin/true",
        once_each(lambda: subprocess.run(["/bin/true"]), 5 if quick else 20),
    )
    tables.append(t)
    if tmp is not None:
        c64 = client64_rows(libs, tmp, quick)
        if c64 is not None:
            tables.append(c64)
    tables.append(list_rows(libs, ref, a, reps))
    return tables


def list_rows(libs: dict[int, str], ref: Any, a: Any, reps: int) -> Table:
    """A Python list for a double *. Run last: its large allocations change the state of the allocator
    the other 8 MB rows run in (before them, they moved the Client64 bytes row from ~15 ms to ~5 ms,
    probably through glibc's dynamic mmap threshold)."""
    n = len(a)
    t = Table("sum of a Python list of 1M floats by the library")
    values = a.tolist()
    t.add(
        "baseline: in-process ctypes, list copied into (c_double * n)(*values)",
        once_each(lambda: ref.sum4((ctypes.c_double * n)(*values), n), reps),
    )
    lib = bct.CDLL(libs[32])
    s = lib.function("double sum4(const double *f, int n)")
    t.add("bitbridge, i686 server, list (const: one copy in)", once_each(lambda: s(values, n), reps))
    lib.sum4.argtypes, lib.sum4.restype = [bct.POINTER(bct.c_double), bct.c_int], bct.c_double
    t.add(
        "bitbridge, i686 server, list for POINTER(c_double) (in and back into the list)",
        once_each(lambda: lib.sum4(values, n), reps),
    )
    lib.server.shutdown()
    return t


BB_MODULE = """
import os
from bitbridge import Server32

class Add32(Server32):
    def __init__(self, host, port, **kwargs):
        super().__init__(os.environ["BENCH_LIBRARY"], "cdll", host, port)

    def add(self, a, b):
        return a + b

    def echo(self, x):
        return x
"""
MSL_MODULE = BB_MODULE.replace("from bitbridge import Server32", "from msl.loadlib import Server32")


def client64_rows(libs: dict[int, str], tmp: Path, quick: bool) -> Table | None:
    """Client64/Server32: bitbridge's (a 32-bit CPython in a bitbridge server) beside msl-loadlib's (its
    frozen 32-bit server, pickle over HTTP on a local port), when msl-loadlib is installed."""
    try:
        from msl.loadlib import Client64 as MslClient64
    except ImportError:
        MslClient64 = None  # noqa: N806
    os.environ["BENCH_LIBRARY"] = libs[32]
    (tmp / "bb_add32.py").write_text(BB_MODULE)
    (tmp / "msl_add32.py").write_text(MSL_MODULE)
    t = Table("Client64.request32 (the Server32 module in a 32-bit Python)")
    reps = 3 if quick else 10
    calls = 200 if quick else 2000
    clients = [("bitbridge", lambda: bitbridge.Client64("bb_add32", append_sys_path=str(tmp)))]
    if MslClient64 is not None:
        clients.append(("msl-loadlib 1.1", lambda: MslClient64("msl_add32", append_sys_path=str(tmp))))
    a = np.arange(1_000_000, dtype=np.float64)
    for name, make in clients:
        t.add(f"{name}: start to first request", once_each(lambda make=make: _start_and_add(make), reps))
        c = make()
        t.add(
            f"{name}: request32('add', 1, 2)",
            per_call(lambda c=c: c.request32("add", 1, 2), calls, 5 if quick else 15),
        )
        if name == "bitbridge":
            t.add(
                f"{name}: 1M float64 numpy array there and back",
                once_each(lambda c=c: c.request32("echo", a), reps * 3),
            )
        # msl-loadlib pickles: a numpy array needs numpy in the 32-bit Python, so it goes as bytes.
        t.add(
            f"{name}: 1M float64 as bytes there and back",
            once_each(lambda c=c: c.request32("echo", a.tobytes()), reps * 3),
        )
        c.shutdown_server32()
    return t


def _start_and_add(make: Callable[[], Any]) -> None:
    c = make()
    c.request32("add", 1, 2)
    c.shutdown_server32()


def _first_call(path: str) -> None:
    lib = bct.CDLL(path)
    lib.add.argtypes = [bct.c_int, bct.c_int]
    lib.add(1, 2)
    lib.server.shutdown()


def _spin() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=".")
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--no-load", action="store_true", help="skip the loaded run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        libs = build(Path(d))
        cpus = os.cpu_count() or 1
        print(
            f"pybitbridge {bitbridge.__version__} benchmark: {cpus} CPUs, {platform.machine()}, Python {platform.python_version()}"
        )
        _cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")][
            :1
        ]
        print(f"cpu: {_cpu[0] if _cpu else 'unknown'}; medians of batches, 10th/90th percentiles")
        print("\n## quiet machine\n")
        for t in run(libs, args.quick, Path(d)):
            t.print()
        if args.no_load:
            return
        print(f"\n## loaded machine: {2 * cpus} busy processes (2 per CPU) at the same priority\n")
        hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2 * cpus)]
        try:
            for h in hogs:
                h.start()
            time.sleep(0.2)
            for t in run(libs, True, Path(d)):
                t.print()
        finally:
            for h in hogs:
                h.kill()
            for h in hogs:
                h.join()


if __name__ == "__main__":
    main()

"""Checksum speed: dth_ray's CRC64NVME (awscrt) and CRC-64/XZ (fastcrc) against crcmod 1.7 and MD5, in MB/s and
CPU s per GB."""

# usage: python benchmarks/bench_checksums.py [--mib 256] [--rounds 3] [--pure-mib 16]
# crcmod with its C extension and its pure-Python fallback; each one-shot and fed in 8 MiB parts as the copier
# feeds them. Every CRC is checked against the others before anything is timed. Writes
# benchmarks/results/checksums-<date>.json and prints a Markdown table (benchmarks/README.md has the latest).

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import crcmod

from dth_ray.checksums import crc64ecma, crc64nvme, new_crc64ecma

HERE = Path(__file__).resolve().parent
PART = 8 * 1024 * 1024  # the copier's default part size: a running digest gets one part at a time
_POLY, _XOROUT = 0x142F0E1EBA9EA3693, 0xFFFFFFFFFFFFFFFF


def crcmod_ext() -> tuple[Callable[[bytes], int], bool]:
    """crcmod's CRC-64/XZ as dth_ray used it until now, and whether its C extension is the one in use."""
    fun = crcmod.mkCrcFun(_POLY, initCrc=0, rev=True, xorOut=_XOROUT)
    return fun, bool(getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", False))


def crcmod_pure() -> Callable[[bytes], int]:
    """crcmod's pure-Python fallback: what a node gets when its C extension could not be built (no compiler),
    e.g. on Graviton, where crcmod 1.7 has no wheel."""
    from crcmod import _crcfunpy

    table = sys.modules["crcmod.crcmod"]._mkTable_r(_POLY, 64)
    return lambda data: _crcfunpy._crc64r(data, _XOROUT, table) ^ _XOROUT


def one_shot(name: str, data: bytes) -> Callable[[], object]:
    ext, _ = crcmod_ext()
    return {"crc64nvme": lambda: crc64nvme(data), "fastcrc": lambda: crc64ecma(data), "crcmod": lambda: ext(data),
            "crcmod-pure": lambda: crcmod_pure()(data), "md5": lambda: hashlib.md5(data).digest()}[name]


def in_parts(name: str, data: bytes) -> Callable[[], object]:
    """A running digest fed `PART` bytes at a time (memoryview slices: no copies), as the copier does."""
    view = memoryview(data)
    if name == "crc64nvme":  # a running CRC: each part continues the previous value
        def run_crc() -> int:
            value = 0
            for start in range(0, len(data), PART):
                value = crc64nvme(view[start:start + PART], value)
            return value

        return run_crc

    def run():
        running = {"fastcrc": new_crc64ecma, "md5": hashlib.md5,
                   "crcmod": lambda: crcmod.Crc(_POLY, initCrc=0, rev=True, xorOut=_XOROUT)}[name]()
        for start in range(0, len(data), PART):
            running.update(view[start:start + PART])
        return running

    return run


def measure(fn: Callable[[], object], nbytes: int, rounds: int) -> dict:
    walls, cpus = [], []
    for _ in range(rounds):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    mb_s = [nbytes / 1e6 / w for w in walls]
    cpu_s_gb = [c / (nbytes / 1e9) for c in cpus]
    return {"rounds": rounds, "bytes": nbytes, "mb_s": [round(v, 1) for v in mb_s],
            "mb_s_median": round(statistics.median(mb_s), 1), "cpu_s_per_gb": [round(v, 4) for v in cpu_s_gb],
            "cpu_s_per_gb_median": round(statistics.median(cpu_s_gb), 4)}


def check_agreement(data: bytes) -> None:
    """The implementations agree on the catalogue check value and on `data`, one-shot and in parts."""
    ext, _ = crcmod_ext()
    assert crc64ecma(b"123456789") == ext(b"123456789") == crcmod_pure()(b"123456789") == 0x995DC9BBDF1939FA
    sample = data[: 1 << 20]
    assert crc64ecma(sample) == ext(sample) == crcmod_pure()(sample)
    assert crc64ecma(data) == ext(data) == in_parts("fastcrc", data)().value
    assert in_parts("crcmod", data)().crcValue == ext(data)
    assert in_parts("md5", data)().digest() == hashlib.md5(data).digest()
    assert crc64nvme(b"123456789") == 0xAE8B14860A799888  # CRC-64/NVME's catalogue check value
    assert in_parts("crc64nvme", data)() == crc64nvme(data)


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "arch": platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(),
            "pclmulqdq": "pclmulqdq" in info, "vpclmulqdq": "vpclmulqdq" in info,
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "fastcrc": metadata.version("fastcrc"), "crcmod": metadata.version("crcmod"),
            "awscrt": metadata.version("awscrt"),
            "crcmod_c_extension": crcmod_ext()[1], "openssl": __import__("ssl").OPENSSL_VERSION}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="buffer size for the timed runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pure-mib", type=int, default=16,
                        help="buffer for crcmod's pure-Python fallback (about 100 times slower), one round")
    args = parser.parse_args()
    data = os.urandom(args.mib * 1024 * 1024)
    check_agreement(data)
    results = []
    for name in ("crc64nvme", "fastcrc", "crcmod", "md5"):
        for mode, make in (("one-shot", one_shot), ("8 MiB parts", in_parts)):
            make(name, data[:PART])()  # warm-up: first-call set-up is not what a copy pays per byte
            results.append({"name": name, "mode": mode, **measure(make(name, data), len(data), args.rounds)})
    if args.pure_mib:
        pure = data[: args.pure_mib * 1024 * 1024]
        results.append({"name": "crcmod-pure", "mode": "one-shot", **measure(one_shot("crcmod-pure", pure),
                                                                             len(pure), 1)})
    started = time.strftime("%Y-%m-%d-%H%M", time.gmtime())
    doc = {"started_utc": started, "machine": machine(), "results": results}
    out = HERE / "results" / f"checksums-{started}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"| checksum | feed | buffer | MB/s (median of {args.rounds}) | MB/s rounds | CPU s/GB (median) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['mode']} | {r['bytes'] // (1024 * 1024)} MiB | {r['mb_s_median']:,.0f} | "
              f"{', '.join(f'{v:,.0f}' for v in r['mb_s'])} | {r['cpu_s_per_gb_median']:.3f} |")
    print(f"\n{json.dumps(doc['machine'])}\nwritten: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()

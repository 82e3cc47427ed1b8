"""This CPU's ceiling for convolutions: multiply-accumulates per second of its widest dot-product
instruction in each precision, on every core at once.

Compiles three tiny C loops with the system's C compiler (`cc`), each issuing one AVX-512
instruction on 24 independent 512-bit accumulators (enough to hide its latency) and nothing else:

    fp32  vfmadd231ps  16 MACs per instruction (16 fp32 lanes)
    bf16  vdpbf16ps    32 MACs (16 fp32 lanes, each the dot product of two bf16 pairs)
    int8  vpdpbusd     64 MACs (16 int32 lanes, each the dot product of four u8 x s8 pairs)

and runs one copy per core, pinned, at the same time. No convolution can multiply-accumulate
faster than this, so it bounds what any kernel (oneDNN's, Inductor's, ONNX Runtime's) can reach:
compare it with `scripts/profile_evaluate.py`'s GMAC/s per convolution.

    python scripts/dot_product_peak.py [--seconds 2] [--cores N]

Prints a table, then one JSON line with GMAC/s per precision (all cores together and per core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# precision -> (CPU flag it needs, instruction, MACs per instruction on 512-bit registers)
KERNELS = {
    "fp32": ("avx512f", "vfmadd231ps", 16),
    "bf16": ("avx512_bf16", "vdpbf16ps", 32),
    "int8": ("avx512_vnni", "vpdpbusd", 64),
}

# Written in assembly, not intrinsics: a compiler folds or drops intrinsics whose results it can
# predict, and then the loop times nothing. zmm0-zmm23 accumulate, zmm30 and zmm31 are the inputs
# (zero: the value does not change the instruction's speed).
SOURCE = """
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}}

int main(int argc, char **argv) {{
    double seconds = atof(argv[1]), elapsed, start = now();
    long rounds = 0;
    __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\\n\\tvpxord %%zmm31, %%zmm31, %%zmm31"
                     ::: "xmm30", "xmm31");
    do {{
        for (int r = 0; r < 100000; r++)
            __asm__ volatile({body} ::: {clobbers});
        rounds += 100000;
        elapsed = now() - start;
    }} while (elapsed < seconds);
    printf("%.6f\\n", rounds * 24.0 * {macs} / elapsed / 1e9);
    return 0;
}}
"""


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def build(folder: Path, precision: str) -> Path:
    _, instruction, macs = KERNELS[precision]
    body = " ".join(f'"{instruction} %%zmm30, %%zmm31, %%zmm{i}\\n\\t"' for i in range(24))
    source = folder / f"{precision}.c"
    clobbers = ", ".join(f'"xmm{i}"' for i in range(24))
    source.write_text(SOURCE.format(body=body, clobbers=clobbers, macs=macs))
    binary = folder / precision
    # -mavx512f: lets the asm name registers 16-31 as clobbered
    subprocess.run(["cc", "-O2", "-mavx512f", str(source), "-o", str(binary)], check=True)
    return binary


def run_on_cores(binary: Path, cores: list[int], seconds: float) -> list[float]:
    """GMAC/s of each core, all running the loop at the same time."""
    procs = [
        subprocess.Popen(
            [str(binary), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}),
        )
        for core in cores
    ]
    return [float(proc.communicate()[0]) for proc in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per precision")
    parser.add_argument("--cores", type=int, default=None, help="default: all this process may use")
    args = parser.parse_args()
    if shutil.which("cc") is None:
        sys.exit("needs a C compiler on PATH as `cc` (e.g. apt install gcc)")
    cores = sorted(os.sched_getaffinity(0))[: args.cores]
    flags = cpu_flags()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'precision':<10} {'GMAC/s all cores':>17} {'per core':>28}")
        for precision, (flag, *_) in KERNELS.items():
            if flag not in flags:
                print(f"{precision:<10} {'(no ' + flag + ')':>17}")
                continue
            per_core = run_on_cores(build(Path(folder), precision), cores, args.seconds)
            results[precision] = {
                "gmacs": round(sum(per_core), 1),
                "per_core": [round(g, 1) for g in per_core],
            }
            shown = ", ".join(f"{g:.1f}" for g in per_core)
            print(f"{precision:<10} {sum(per_core):17.1f} {shown:>28}")
    print(json.dumps({"cores": cores, **results}))


if __name__ == "__main__":
    main()

"""Speed-up of a sharded virtual-time simulation (simulations.mpi) on this machine.

Runs the same workload in one process and under ``mpirun -n K`` (in one run of this
script, so both see the same machine load), checks the digests agree and prints the
ratio of simulation wall times (start-up excluded).

    nice -n 10 .venv/bin/python benchmarks/sim_mpi.py --nodes 256 --ranks 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

MPIRUN_FLAGS = ["--oversubscribe", "--allow-run-as-root", "--mca", "mpi_yield_when_idle", "1"]


def _run(cmd: list[str], timeout: float) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    total = time.perf_counter() - t0
    return json.loads(out.stdout.strip().splitlines()[-1]), total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=256)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if shutil.which("mpirun") is None:
        print("mpirun not found: apt-get install openmpi-bin libopenmpi-dev; "
              "pip install -e '.[mpi]'")
        return 2
    base = [sys.executable, "-m", "simulations.mpi", "--nodes", str(args.nodes)]
    one, one_total = _run(base, args.timeout)
    many, many_total = _run(["mpirun", "-n", str(args.ranks), *MPIRUN_FLAGS, *base],
                            args.timeout)
    print(f"nodes={args.nodes} ranks=1 sim_wall_s={one['wall_s']} total_s={one_total:.1f} "
          f"digest={one['digest'][:16]}")
    print(f"nodes={args.nodes} ranks={args.ranks} sim_wall_s={many['wall_s']} "
          f"total_s={many_total:.1f} digest={many['digest'][:16]}")
    print(f"same_digest={one['digest'] == many['digest']} "
          f"speedup={one['wall_s'] / many['wall_s']:.2f}x")
    return 0 if one["digest"] == many["digest"] else 1


if __name__ == "__main__":
    sys.exit(main())

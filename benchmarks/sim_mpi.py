"""Speed-up of a sharded virtual-time simulation on this machine.

Runs the same workload in one process and under ``mpirun -n K`` (in one run of this
script, so both see the same machine load), checks the digests agree and prints the
ratio of wall times. Two workloads:

* default: simulations.mpi's fixed join/announce/lookup workload (simulation wall time,
  start-up excluded);
* ``--engine SCENARIO``: the whole engine, ``kadshare-sim run SCENARIO --runner virtual
  --sharded`` in one process against ``mpirun -n K kadshare-sim run ...`` (wall time of
  the command, start-up and report writing included).

    nice -n 10 .venv/bin/python benchmarks/sim_mpi.py --nodes 256 --ranks 2
    nice -n 10 .venv/bin/python benchmarks/sim_mpi.py --engine churn --nodes 1000 \
        --duration 360 --ranks 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simulations.mpi import mpirun_command


def _run(cmd: list[str], timeout: float) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    total = time.perf_counter() - t0
    return json.loads(out.stdout.strip().splitlines()[-1]), total


def _engine(args: argparse.Namespace) -> int:
    sim = [sys.executable, "-m", "simulations.cli", "run", args.engine, "--runner", "virtual",
           "--nodes", str(args.nodes), "--duration", str(args.duration), "--latency",
           args.latency, "--seed", str(args.seed), "--impl", args.impl, "-q"]
    digests, walls = [], []
    with tempfile.TemporaryDirectory(prefix="sim-mpi-") as tmp:
        for name, cmd in (("1", [*sim, "--sharded"]),
                          (str(args.ranks), [*mpirun_command(args.ranks), *sim])):
            out = Path(tmp) / f"r{name}"
            t0 = time.perf_counter()
            subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True,
                           timeout=args.timeout, check=True)
            walls.append(time.perf_counter() - t0)
            res = json.loads((out / "results.json").read_text())
            digests.append(res["digest"])
            m = res["runs"][0]["metrics"]
            print(f"{args.engine} impl={args.impl} nodes={args.nodes} "
                  f"duration={args.duration} ranks={name} total_s={walls[-1]:.1f} "
                  f"lookups={m['lookups']} success={m['success']} "
                  f"digest={res['digest'][:16]}", flush=True)
    same = digests[0] == digests[1]
    print(f"same_digest={same} speedup={walls[0] / walls[1]:.2f}x")
    return 0 if same else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=256)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--engine", metavar="SCENARIO",
                    help="time kadshare-sim run SCENARIO (the whole engine) instead")
    ap.add_argument("--duration", type=float, default=360, help="--engine: measured s")
    ap.add_argument("--latency", default="20-80ms", help="--engine: one-way delay")
    ap.add_argument("--impl", default="kadshare", help="--engine: kadshare | kademlia")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if shutil.which("mpirun") is None:
        print("mpirun not found: apt-get install openmpi-bin libopenmpi-dev; "
              "pip install -e '.[mpi]'")
        return 2
    if args.engine:
        return _engine(args)
    base = [sys.executable, "-m", "simulations.mpi", "--nodes", str(args.nodes)]
    one, one_total = _run(base, args.timeout)
    many, many_total = _run([*mpirun_command(args.ranks), *base],
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

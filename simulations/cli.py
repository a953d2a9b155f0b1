"""kadshare-sim: reproducible churn experiments for kadshare and two baselines.

Usage:
  kadshare-sim run SCENARIO [options]
  kadshare-sim compare SCENARIO [--impls LIST] [options]
  kadshare-sim plot DIR
  kadshare-sim (-h | --help)
  kadshare-sim --version

Scenarios:
  steady        N nodes, no churn, lookups only.
  churn         sessions end (--session), arrivals keep the population near N.
  mass-failure  crash a fraction at once (--kill, default 0.5@DURATION/3), watch recovery.
  flash-crowd   N/2 nodes join at DURATION/3 and all look up the most popular file.

Options:
  --nodes N            Nodes at start [default: 30].
  --duration S         Measured seconds, after warm-up [default: 30].
  --seed S             Seed of trace, workload and network model [default: 1].
  --runner R           inproc | process | netns | virtual | docker [default: inproc].
  --impl I             kadshare | kademlia | tracker [default: kadshare].
  --impls LIST         Impls for compare, comma separated [default: kadshare,kademlia,tracker].
  --out DIR            Output folder (default: results/SCENARIO-IMPL-seedSEED, IMPL
                       is "compare" for compare).
  --session SPEC       Session times: weibull:k,scale | exp:mean | pareto:a,xm (seconds)
                       [default: weibull:0.5,60].
  --kill SPEC          Crash FRACTION of live nodes at T seconds, e.g. 0.5@20.
  --kill-tracker T     Crash the central tracker at T seconds (tracker impl only).
  --lookup-rate R      Lookups per second, network-wide [default: 5].
  --files N            Distinct files [default: 20].
  --providers N        Providers per file at start [default: 3].
  --zipf S             Zipf exponent of file popularity [default: 1.0].
  --graceful F         Fraction of churn departures that leave gracefully [default: 0.5].
  --latency SPEC       One-way delay per node pair, e.g. 20-80ms [default: 0ms].
  --loss P             Datagram loss probability [default: 0].
  --lookup-timeout S   Give up on a lookup after S seconds [default: 10].
  --proc-delay SPEC    virtual runner: time a node spends per datagram [default: 0.2ms].
  --uplink RATE        virtual runner: uplink bits/s per node, 0 = unlimited [default: 10M].
  --intervals I        kadshare DHT intervals: tests | production [default: tests].
  --warmup W           join: the initial nodes join for real; direct: they start with
                       converged routing tables, ids taken as proven (virtual and
                       inproc runners, --sharded too; docs/SIMULATIONS.md)
                       [default: join].
  --settle S           Quiet seconds after warm-up, before measuring [default: 0].
  --crowd-size SIZE    flash-crowd: size of the crowd's file, e.g. 8M (default: drawn
                       like the others, 1-16 KiB).
  --max-upload-rate R  Real peers (process, netns, docker): each kadshare-node's upload
                       cap, e.g. 2M (bytes/s) [default: 0].
  --fetch              After each successful lookup, download the file over gRPC from
                       the live providers found (real kadshare-node peers only).
  --sharded            virtual runner: shard the run over MPI ranks (conservative
                       PDES); implied under `mpirun -n K` with K > 1. A sharded run
                       gives one digest for any K, but not that of a plain run.
  --trace FILE         Replay a saved trace (its scenario and workload win over flags).
  --save-trace FILE    Also write the drawn trace to FILE.
  -q --quiet           No progress line.
  -v --verbose         Debug logging.
  -h --help            Show this.
  --version            Show the version.

Exit codes: 0 done, 1 the run failed, 2 bad usage or runner unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from docopt import DocoptExit, docopt

from simulations.churn import SpecError, parse_kill, parse_session
from simulations.config import IMPLS, SimConfig, parse_latency, parse_rate
from simulations.scenarios import Trace, TraceError, build_trace

log = logging.getLogger(__name__)


def _size(text: str, key: str) -> int:
    from kadcommon.units import parse_rate as parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise SpecError(f"{key}: {exc}") from exc


def _num(opts: dict[str, Any], key: str, kind: type) -> Any:
    raw = opts[key]
    try:
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{key} expects a {kind.__name__}, got {raw!r}") from exc


def config_from_opts(opts: dict[str, Any], impl: str) -> SimConfig:
    """Build and validate a SimConfig from docopt options."""
    kill_tracker = opts["--kill-tracker"]
    cfg = SimConfig(
        scenario=opts["SCENARIO"],
        nodes=_num(opts, "--nodes", int),
        duration=_num(opts, "--duration", float),
        seed=_num(opts, "--seed", int),
        runner=opts["--runner"],
        impl=impl,
        session=parse_session(opts["--session"]),
        kill=parse_kill(opts["--kill"]) if opts["--kill"] else None,
        kill_tracker=float(kill_tracker) if kill_tracker is not None else None,
        lookup_rate=_num(opts, "--lookup-rate", float),
        files=_num(opts, "--files", int),
        providers=_num(opts, "--providers", int),
        zipf=_num(opts, "--zipf", float),
        graceful=_num(opts, "--graceful", float),
        latency=parse_latency(opts["--latency"]),
        loss=_num(opts, "--loss", float),
        lookup_timeout=_num(opts, "--lookup-timeout", float),
        settle=_num(opts, "--settle", float),
        proc_delay=parse_latency(opts["--proc-delay"])[0],
        uplink=parse_rate(opts["--uplink"]),
        intervals=opts["--intervals"],
        warmup=opts["--warmup"],
        fetch=bool(opts["--fetch"]),
        crowd_size=_size(opts["--crowd-size"] or "0", "--crowd-size"),
        upload_rate=_size(opts["--max-upload-rate"], "--max-upload-rate"),
        progress=not opts["--quiet"],
    )
    return cfg.validate()


def _cancel_on_sigterm() -> None:
    # SIGTERM cancels the run like Ctrl-C does, so runners still remove every process,
    # namespace and temp file on the way out.
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def _run_all(trace: Trace, impls: list[str], progress: bool) -> list[Any]:
    from simulations.engine import run_trace

    _cancel_on_sigterm()
    outcomes = []
    for impl in impls:
        outcomes.append(await run_trace(trace, impl, progress=progress))
    return outcomes


def run_impls(trace: Trace, impls: list[str], progress: bool) -> list[Any]:
    """Run every impl; under the virtual runner each gets a fresh virtual-time loop, so
    an impl's figures are the same in ``run`` and in ``compare``."""
    if trace.config.runner != "virtual":
        return asyncio.run(_run_all(trace, impls, progress))
    from simulations.vloop import run_virtual

    return [run_virtual(_run_all(trace, [impl], progress))[0] for impl in impls]


def version() -> str:
    """``kadshare-sim X.Y.Z``: the installed distribution's version, as the other two
    commands print theirs."""
    try:
        return f"kadshare-sim {metadata.version('kadshare')}"
    except metadata.PackageNotFoundError:   # run from a checkout that is not installed
        from pserver import __version__

        return f"kadshare-sim {__version__}"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # With dozens of nodes in one process, every node's lost-RPC and store warnings
        # would bury the progress line; they are the designs under test doing their job.
        for name in ("kademlia", "rpcudp"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        logging.getLogger("dht").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kadshare-sim``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        opts = docopt(__doc__, argv=args)
    except DocoptExit as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kadshare-sim --help | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if opts["--version"]:
        print(version())
        return 0
    _setup_logging(bool(opts["--verbose"]))
    if opts["plot"]:
        from simulations.plots import draw_all
        from simulations.results import ResultsError

        try:
            files = draw_all(Path(opts["DIR"]))
        except ResultsError as exc:
            print(f"kadshare-sim: {exc}", file=sys.stderr)
            return 2
        for f in files:
            print(Path(opts["DIR"]) / f)
        return 0
    if opts["compare"]:
        impls = [s.strip() for s in str(opts["--impls"]).split(",") if s.strip()]
        bad = [i for i in impls if i not in IMPLS]
        if bad or not impls:
            print(f"kadshare-sim: unknown impl(s) {bad} (use {', '.join(IMPLS)})",
                  file=sys.stderr)
            return 2
    else:
        impls = [opts["--impl"]]
    try:
        cfg = config_from_opts(opts, impls[0])
        if opts["--trace"]:
            loaded = Trace.load(Path(opts["--trace"]))
            trace = Trace(loaded.config.with_changes(runner=cfg.runner, progress=cfg.progress,
                                              fetch=cfg.fetch, proc_delay=cfg.proc_delay,
                                              uplink=cfg.uplink, intervals=cfg.intervals,
                                              upload_rate=cfg.upload_rate),
                          loaded.files, loaded.initial, loaded.events, loaded.meta)
        else:
            trace = build_trace(cfg)
    except (SpecError, TraceError) as exc:
        print(f"kadshare-sim: {exc}", file=sys.stderr)
        return 2
    if opts["--save-trace"]:
        trace.save(Path(opts["--save-trace"]))
    tag = "compare" if opts["compare"] else impls[0]
    out = Path(opts["--out"] or
               f"results/{trace.config.scenario}-{tag}-seed{trace.config.seed}")
    started = datetime.now(timezone.utc)
    from simulations.report import metrics_table, write_outputs
    from simulations.runners import RunnerUnavailable

    shard = None
    try:
        from simulations.mpi import Shard, launched_ranks

        # MPI is initialised only when asked for (--sharded) or started by mpirun.
        if cfg.runner == "virtual" and (opts["--sharded"] or launched_ranks() > 1):
            shard = Shard.from_mpi()
    except RuntimeError as exc:
        print(f"kadshare-sim: {exc}", file=sys.stderr)
        return 2
    if shard is not None and (shard.size > 1 or opts["--sharded"]):
        from simulations.sharded import ShardingUnsupported, check_shardable, run_sharded

        try:
            for impl in impls:
                check_shardable(trace, impl)
        except ShardingUnsupported as exc:
            if shard.rank == 0:
                print(f"kadshare-sim: {exc}", file=sys.stderr)
            return 2
        ran = [run_sharded(trace, impl, shard, progress=cfg.progress and shard.rank == 0)
               for impl in impls]
        if shard.rank != 0:     # rank 0 writes the results
            return 0
        outcomes: list[Any] = [o for o in ran if o is not None]
    elif opts["--sharded"]:
        print("kadshare-sim: --sharded needs --runner virtual", file=sys.stderr)
        return 2
    else:
        try:
            outcomes = run_impls(trace, impls, cfg.progress)
        except RunnerUnavailable as exc:
            print(f"kadshare-sim: runner {cfg.runner} unavailable: {exc}", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\nkadshare-sim: interrupted; everything was cleaned up", file=sys.stderr)
            return 130
    results = write_outputs(out, trace, outcomes, command=["kadshare-sim", *args],
                            started=started)
    print(metrics_table(results["runs"]))
    print(f"\ndigest {results['digest']}")
    print(f"\nwrote {out}/results.json, timeseries.csv, report.md and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())

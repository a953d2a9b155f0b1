"""Run the ``kadshare`` command as a real process from async tests (bounded in time)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KADSHARE = [sys.executable, "-m", "pclient.cli"]


async def run_cli(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``kadshare ARGS``."""
    proc = await asyncio.create_subprocess_exec(
        *KADSHARE, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


async def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``pclient.cli.main(ARGS)`` run in a worker thread.

    The same code path as the console script without a process start-up (seconds on a
    loaded machine); for REST-only commands. Downloads, signals and anything using gRPC
    run as a real process with ``run_cli`` (grpc.aio objects stay in one loop per process).
    """
    from pclient.cli import main

    code = await asyncio.wait_for(asyncio.to_thread(main, list(args)), 120)
    captured = capsys.readouterr()
    return code, captured.out, captured.err

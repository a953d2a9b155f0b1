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

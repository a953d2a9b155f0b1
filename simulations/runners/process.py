"""process: real ``kadshare-node`` peers (or worker processes for the baselines)."""

from simulations.runners.subproc import ProcessRunner

__all__ = ["ProcessRunner"]

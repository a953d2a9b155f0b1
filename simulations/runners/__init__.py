"""Runners place nodes: ``inproc`` (one loop), ``process`` (child processes), ``netns``,
``virtual`` (virtual time, in-memory network), ``docker`` (one container per node)."""

from __future__ import annotations

from pathlib import Path

from simulations.config import SimConfig
from simulations.impls import Impl
from simulations.netmodel import NetModel
from simulations.runners.base import Runner, RunnerUnavailable

__all__ = ["Runner", "RunnerUnavailable", "make_runner"]


def make_runner(cfg: SimConfig, impl: Impl, netmodel: NetModel, workdir: Path) -> Runner:
    """The runner named by ``cfg.runner``."""
    if cfg.runner == "inproc":
        from simulations.runners.inproc import InprocRunner

        return InprocRunner(cfg, impl, netmodel, workdir)
    if cfg.runner == "process":
        from simulations.runners.process import ProcessRunner

        return ProcessRunner(cfg, impl, netmodel, workdir)
    if cfg.runner == "netns":
        from simulations.runners.netns import NetnsRunner

        return NetnsRunner(cfg, impl, netmodel, workdir)
    if cfg.runner == "virtual":
        from simulations.runners.virtual import VirtualRunner

        return VirtualRunner(cfg, impl, netmodel, workdir)
    if cfg.runner == "docker":
        from simulations.runners.docker import DockerRunner

        return DockerRunner(cfg, impl, netmodel, workdir)
    raise ValueError(f"unknown runner {cfg.runner!r}")

"""deploy/kadshare-node.service as systemd reads it, and its environment file example.

``systemd-analyze verify`` loads the unit as systemd would (unknown keys, bad values,
a missing executable all fail it); ``systemd-analyze security --offline`` scores its
sandboxing. Both run where systemd-analyze exists and skip with the reason elsewhere.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pserver.cli import build_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "kadshare-node.service"
ENV_EXAMPLE = ROOT / "deploy" / "kadshare-node.env"
INSTALLED_AT = "/opt/kadshare/bin/kadshare-node"


def analyze(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    # verify checks that ExecStart exists: point it at this checkout's kadshare-node.
    here = Path(sys.executable).parent / "kadshare-node"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_AT, str(here)))
    return subprocess.run([tool, *args, unit.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_is_a_notify_service_with_its_own_state_and_user() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["ExecStart"] == [INSTALLED_AT]
    assert settings["DynamicUser"] == ["yes"] and settings["StateDirectory"] == ["kadshare"]
    assert settings["ProtectSystem"] == ["strict"] and settings["NoNewPrivileges"] == ["yes"]
    assert "KADSHARE_DATA=%S/kadshare" in settings["Environment"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = analyze(tmp_path, "--man=no", "verify")
    assert done.returncode == 0, done.stderr
    # Warnings (unknown keys, ignored values) come back with exit 0: none allowed.
    assert UNIT.name not in done.stderr, done.stderr


def test_the_sandbox_rates_ok(tmp_path: Path) -> None:
    done = analyze(tmp_path, "security", "--offline=yes", "--no-pager")
    if done.returncode != 0 and "offline" in done.stderr:
        pytest.skip(f"this systemd-analyze cannot score offline: {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    # 0 is fully sandboxed, 10 not at all; below 2 systemd calls it "OK".
    assert float(match.group(1)) < 2.0, done.stdout


def test_environment_example_is_a_valid_node_configuration() -> None:
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip()
    assert env and all(key.startswith("KADSHARE_") for key in env)
    config, _level = build_config({}, env)
    assert config.host == env["KADSHARE_HOST"] and config.dht_port == 8468
    assert str(config.share_dir) == env["KADSHARE_SHARE"]

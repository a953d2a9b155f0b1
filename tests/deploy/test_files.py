"""What the Dockerfile and compose file promise an operator, read from the files:
REST never published beyond loopback, only the peer ports exposed, no root, a health
check, and a PID 1 that passes SIGTERM on (the testnet test shows them working)."""

from __future__ import annotations

from pathlib import Path

import pytest

# In the test extra; a venv made before it was added skips until `make install`.
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> dict[str, list[str]]:
    """Dockerfile instructions (continuation lines joined), by keyword."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.setdefault(keyword.upper(), []).append(rest.strip())
    return found


def test_image_exposes_only_the_peer_ports_and_runs_unprivileged_under_tini() -> None:
    found = instructions()
    assert found["EXPOSE"] == ["8468/udp 50051/tcp"]
    assert found["USER"] == ["kadshare"]
    assert found["ENTRYPOINT"] == ['["/usr/bin/tini", "--", "kadshare-node"]']
    assert any("/status" in check for check in found["HEALTHCHECK"])
    assert found["VOLUME"] == ['["/data"]']
    assert any(arg.startswith("BASE=") for arg in found["ARG"])


def test_compose_publishes_rest_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"bootstrap", "peer"}
    for name, service in services.items():
        ports = service.get("ports", [])
        assert ports, f"{name}: REST not published"
        for port in ports:
            assert str(port).startswith("127.0.0.1:") and str(port).endswith(":8000"), port
        assert service["networks"] == ["kadnet"]
    assert services["peer"]["environment"]["KADSHARE_BOOTSTRAP"] == "bootstrap:8468"
    assert services["peer"]["depends_on"]["bootstrap"]["condition"] == "service_healthy"

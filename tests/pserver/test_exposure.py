"""Issue 10, items 3 and 16: what the REST API shows, to whom, and who may write."""

from __future__ import annotations

import httpx
import pytest

from tests.pserver.conftest import Peers


async def test_rest_listens_on_rest_host_not_on_host(peers: Peers) -> None:
    # DHT and gRPC on 127.0.0.2 (as --host 0.0.0.0 would open them); REST stays on 127.0.0.1
    node = await peers.start(host="127.0.0.2")
    port = node.info["rest_port"]
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"http://127.0.0.1:{port}/status")).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.2:{port}/status")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Host": "evil.example"}, "DNS rebinding"),
        ({"Origin": "http://evil.example"}, "cross-origin"),
        ({"Origin": "null"}, "cross-origin"),
    ],
)
async def test_browser_driven_writes_are_refused(
    peers: Peers, headers: dict[str, str], reason: str
) -> None:
    node = await peers.start({"a.txt": b"a"})
    port = node.info["rest_port"]
    file_id = node.catalog.files()[0].file_id
    auth = {"Authorization": f"Bearer {node.token}"}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.delete(f"http://127.0.0.1:{port}/files/{file_id}",
                                   headers={**auth, **headers})
        assert answer.status_code == 403
        assert reason in answer.json()["error"]
        assert [f.file_id for f in node.catalog.files()] == [file_id]  # nothing happened
        same_origin = {"Origin": f"http://127.0.0.1:{port}"}
        answer = await http.delete(f"http://127.0.0.1:{port}/files/{file_id}",
                                   headers={**auth, **same_origin})
        assert answer.status_code == 200
        preflight = await http.options(f"http://127.0.0.1:{port}/files",
                                       headers={"Origin": "http://evil.example",
                                                "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers


async def test_root_points_to_the_api_description(peers: Peers) -> None:
    node = await peers.start()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"http://127.0.0.1:{node.info['rest_port']}/")
        assert answer.status_code == 200
        assert answer.json()["openapi"] == "/openapi.json"


@pytest.mark.parametrize(
    ("argv", "accept", "open_"),
    [
        ([], False, False),
        (["--accept-uploads"], True, False),
        (["--accept-uploads", "--rest-port", "0"], True, False),
        (["--accept-uploads", "open"], True, True),
        (["--accept-uploads=open"], True, True),
    ],
)
def test_upload_modes_from_flags(argv: list[str], accept: bool, open_: bool) -> None:
    from docopt import docopt

    from pserver import cli

    args = docopt(cli.__doc__, argv=cli.normalise_argv(["--data", "/tmp/kd-x", *argv]))
    config, _ = cli.build_config(args, {})
    assert (config.accept_uploads, config.open_uploads) == (accept, open_)
    assert config.rest_host == "127.0.0.1"


def test_rest_host_flag_and_bad_upload_mode() -> None:
    from docopt import docopt

    from pserver import cli

    args = docopt(cli.__doc__, argv=["--data", "/tmp/kd-x", "--rest-host", "0.0.0.0"])
    assert cli.build_config(args, {})[0].rest_host == "0.0.0.0"
    args = docopt(cli.__doc__, argv=["--data", "/tmp/kd-x", "--accept-uploads=maybe"])
    with pytest.raises(cli.UsageError, match="accept-uploads"):
        cli.build_config(args, {})


async def test_own_files_by_unique_prefix(peers: Peers) -> None:
    node = await peers.start({"a.txt": b"alpha", "b.txt": b"beta"})
    port = node.info["rest_port"]
    file_id = {f.name: f.file_id for f in node.catalog.files()}["a.txt"]
    auth = {"Authorization": f"Bearer {node.token}"}
    async with httpx.AsyncClient(timeout=10) as http:
        one = await http.get(f"http://127.0.0.1:{port}/files/{file_id[:10]}")
        assert one.status_code == 200 and one.json()["file_id"] == file_id
        assert (await http.get(f"http://127.0.0.1:{port}/files/{file_id[:5]}")).status_code == 400
        unknown = "0" * 8 if not file_id.startswith("0" * 8) else "f" * 8
        assert (await http.get(f"http://127.0.0.1:{port}/files/{unknown}")).status_code == 404
        gone = await http.delete(f"http://127.0.0.1:{port}/files/{file_id[:12]}", headers=auth)
        assert gone.status_code == 200 and gone.json()["file_id"] == file_id

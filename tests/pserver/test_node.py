"""A whole peer in-process: REST calls, write calls with the token, metrics, changes on
disk, uploads that get announced, and restarts that keep identity, contacts and cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos import kadshare_pb2_grpc
from pserver.config import NodeConfig
from pserver.errors import ConfigError
from pserver.node import Node
from tests.pserver.conftest import Peers, eventually, rest_url
from tests.pserver.helpers import channel, content, download, sha, upload

PHOTO = content(150_000, seed=11)
NOTES = b"meeting notes, tuesday\n"


async def search_ids(http: httpx.AsyncClient, node, query: str) -> dict[str, int]:
    reply = await http.get(rest_url(node) + "/search", params={"q": query})
    assert reply.status_code == 200, reply.text
    return {hit["file_id"]: hit["providers"] for hit in reply.json()["results"]}


async def shared_names(http: httpx.AsyncClient, node) -> set[str]:
    reply = await http.get(rest_url(node) + "/files")
    assert reply.status_code == 200
    return {f["name"] for f in reply.json()["files"]}


class TestReadCalls:
    async def test_status_files_peers_fields(self, peers: Peers, http: httpx.AsyncClient) -> None:
        a = await peers.start({"Holiday Photo.jpg": PHOTO})
        b = await peers.start({"sub/notes.txt": NOTES}, join=a)
        status = (await http.get(rest_url(b) + "/status")).json()
        assert set(status) == {"node_id", "host", "dht_port", "grpc_port", "rest_port",
                               "peers", "files", "records", "transfers", "network"}
        assert (status["transfers"], status["network"]) == ("tls", "public")
        # the file, and the folder "sub" shared as a unit (its manifest, issue 13)
        assert status["node_id"] == b.info["node_id"] and status["files"] == 2
        files = (await http.get(rest_url(b) + "/files")).json()
        notes = {"file_id": sha(NOTES), "name": "sub/notes.txt", "size": len(NOTES)}
        assert [f["name"] for f in files["files"]] == ["sub.kadfolder", "sub/notes.txt"]
        assert files["files"][1] == notes
        one = await http.get(rest_url(b) + f"/files/{sha(NOTES)}")
        assert one.json() == notes
        table = (await http.get(rest_url(b) + "/peers")).json()["peers"]
        assert {"node_id": a.info["node_id"], "host": "127.0.0.1",
                "dht_port": a.info["dht_port"]} in table

    async def test_search_and_providers_across_peers(
        self, peers: Peers, http: httpx.AsyncClient
    ) -> None:
        a = await peers.start({"Holiday Photo.jpg": PHOTO})
        b = await peers.start({"copy/holiday photo.jpg": PHOTO}, join=a)
        c = await peers.start(join=a)

        async def both_listed() -> bool:
            return (await search_ids(http, c, "HOLIDAY")).get(sha(PHOTO)) == 2

        await eventually(both_listed)
        reply = (await http.get(rest_url(c) + f"/providers/{sha(PHOTO)}")).json()
        assert reply["file_id"] == sha(PHOTO)
        grpcs = {p["grpc"] for p in reply["providers"]}
        assert grpcs == {f"127.0.0.1:{n.info['grpc_port']}" for n in (a, b)}
        assert all(set(p) == {"node_id", "grpc", "name", "size", "expires", "partial"}
                   for p in reply["providers"])

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/files/xyz", 400),
            ("/files/" + "g" * 64, 400),
            ("/files/" + "0" * 63, 404),  # a valid prefix (8+ hex) that matches nothing
            ("/files/" + "0" * 7, 400),  # too short to be a prefix
            ("/files/" + "a" * 64, 404),
            ("/providers/nothex", 400),
            ("/search", 400),
            ("/search?q=", 400),
            ("/search?q=%20%20", 400),
            ("/search?q=" + "x" * 300, 400),
            ("/no/such/call", 404),
        ],
    )
    async def test_errors_are_json(
        self, peers: Peers, http: httpx.AsyncClient, path: str, status: int
    ) -> None:
        node = await peers.start()
        reply = await http.get(rest_url(node) + path)
        assert reply.status_code == status
        body = reply.json()
        assert list(body) == ["error"] and body["error"]
        assert "Traceback" not in reply.text

    async def test_wrong_method_and_garbage_body(
        self, peers: Peers, http: httpx.AsyncClient
    ) -> None:
        node = await peers.start()
        reply = await http.put(rest_url(node) + "/status")
        assert reply.status_code == 405 and "error" in reply.json()
        token = (node.config.data_dir / "token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        for body in (b"not json", b"[1,2]", b'{"path": 5}', b'{"path": "relative"}',
                     b'{"path": "/no/such/file"}'):
            reply = await http.post(rest_url(node) + "/files", content=body, headers=auth)
            assert reply.status_code == 400, body
            assert "error" in reply.json()
        big = b'{"path": "' + b"a" * 100_000 + b'"}'
        reply = await http.post(rest_url(node) + "/files", content=big, headers=auth)
        assert reply.status_code == 413 and "error" in reply.json()

    async def test_openapi_lists_every_call(self, peers: Peers, http: httpx.AsyncClient) -> None:
        node = await peers.start()
        doc = (await http.get(rest_url(node) + "/openapi.json")).json()
        assert doc["openapi"].startswith("3.")
        assert {"/status", "/files", "/files/{file_id}", "/search", "/providers/{file_id}",
                "/peers", "/metrics"} <= set(doc["paths"])


class TestWriteCalls:
    async def test_token_file_is_private(self, peers: Peers) -> None:
        node = await peers.start()
        mode = stat.S_IMODE(os.stat(node.config.data_dir / "token").st_mode)
        assert mode == 0o600

    async def test_without_or_with_wrong_token(
        self, peers: Peers, http: httpx.AsyncClient
    ) -> None:
        node = await peers.start({"a.txt": b"a"})
        url = rest_url(node)
        body = {"path": str(node.config.share_dir / "a.txt")}
        assert (await http.post(url + "/files", json=body)).status_code == 401
        assert (await http.delete(url + f"/files/{sha(b'a')}")).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (await http.post(url + "/files", json=body, headers=wrong)).status_code == 403
        reply = await http.delete(url + f"/files/{sha(b'a')}", headers=wrong)
        assert reply.status_code == 403 and "error" in reply.json()
        basic = {"Authorization": "Basic abc"}
        assert (await http.post(url + "/files", json=body, headers=basic)).status_code == 401
        assert await shared_names(http, node) == {"a.txt"}

    async def test_share_by_path_then_unshare(
        self, peers: Peers, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        a = await peers.start()
        b = await peers.start(join=a)
        outside = tmp_path / "Annual Budget.xlsx"
        outside.write_bytes(b"numbers")
        token = (a.config.data_dir / "token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        reply = await http.post(rest_url(a) + "/files", json={"path": str(outside)},
                                headers=auth)
        assert reply.status_code == 201
        assert reply.json() == {"file_id": sha(b"numbers"), "name": "Annual Budget.xlsx",
                                "size": 7}

        async def found() -> bool:
            return sha(b"numbers") in await search_ids(http, b, "budget")

        await eventually(found)
        reply = await http.delete(rest_url(a) + f"/files/{sha(b'numbers')}", headers=auth)
        assert reply.status_code == 200
        assert await shared_names(http, a) == set()
        assert outside.read_bytes() == b"numbers"  # untouched

        async def withdrawn() -> bool:
            got = await http.get(rest_url(b) + f"/providers/{sha(b'numbers')}")
            return got.json()["providers"] == []

        await eventually(withdrawn)
        again = await http.delete(rest_url(a) + f"/files/{sha(b'numbers')}", headers=auth)
        assert again.status_code == 404


    async def test_slow_hash_answers_202_then_shares(
        self, peers: Peers, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        node = await peers.start(share_wait=0.0)
        outside = tmp_path / "huge.iso"
        outside.write_bytes(content(3_000_000, 8))
        token = (node.config.data_dir / "token").read_text().strip()
        reply = await http.post(rest_url(node) + "/files", json={"path": str(outside)},
                                headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 202 and reply.json()["status"] == "hashing"

        async def listed() -> bool:
            return await shared_names(http, node) == {"huge.iso"}

        await eventually(listed)


class TestShareFolderChanges:
    async def test_added_removed_renamed_show_in_files_and_search(
        self, peers: Peers, http: httpx.AsyncClient
    ) -> None:
        a = await peers.start({"old name.txt": NOTES})
        b = await peers.start(join=a)
        share = a.config.share_dir
        assert share is not None
        (share / "fresh report.pdf").write_bytes(b"fresh")
        (share / "old name.txt").rename(share / "renamed minutes.txt")

        async def reflected() -> bool:
            return await shared_names(http, a) == {"fresh report.pdf", "renamed minutes.txt"}

        await eventually(reflected)

        async def searchable() -> bool:
            return (sha(b"fresh") in await search_ids(http, b, "report")
                    and sha(NOTES) in await search_ids(http, b, "minutes"))

        await eventually(searchable)
        (share / "fresh report.pdf").unlink()

        async def gone() -> bool:
            names = await shared_names(http, a)
            providers = (await http.get(rest_url(b) + f"/providers/{sha(b'fresh')}")).json()
            return names == {"renamed minutes.txt"} and providers["providers"] == []

        await eventually(gone)


class TestUploadAnnounced:
    async def test_upload_is_announced_and_found(
        self, peers: Peers, http: httpx.AsyncClient
    ) -> None:
        a = await peers.start(accept_uploads=True, max_upload=1_000_000)
        b = await peers.start(join=a)
        data = content(300_000, seed=5)
        async with channel(f"127.0.0.1:{a.info['grpc_port']}") as ch:
            stub = kadshare_pb2_grpc.TransferServiceStub(ch)
            reply = await upload(stub, "uploaded dataset.csv", data, token=a.token)
            assert reply.file_id == sha(data)
            assert await download(stub, sha(data)) == data

        async def found() -> bool:
            return (await search_ids(http, b, "dataset")).get(sha(data)) == 1

        await eventually(found)


class TestMetrics:
    async def test_parses_and_counts(self, peers: Peers, http: httpx.AsyncClient) -> None:
        a = await peers.start({"x.bin": PHOTO})
        b = await peers.start(join=a)  # a second registry in the same process
        async with channel(f"127.0.0.1:{a.info['grpc_port']}") as ch:
            assert await download(kadshare_pb2_grpc.TransferServiceStub(ch), sha(PHOTO)) == PHOTO
        await http.get(rest_url(a) + "/search", params={"q": "x"})
        reply = await http.get(rest_url(a) + "/metrics")
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text)
            for s in family.samples
        }
        assert samples[("kadshare_bytes_served_total", ())] == len(PHOTO)
        assert samples[("kadshare_shared_files", ())] == 1
        assert samples[("kadshare_routing_table_size", ())] >= 1
        assert samples[("kadshare_records_stored", ())] >= 1
        assert samples[("kadshare_lookups_total", (("kind", "search"), ("outcome", "ok")))] == 1
        assert ("kadshare_active_transfers", (("direction", "download"),)) in samples
        dht_events = {  # the DHT's own counters, with real values
            dict(labels)["event"]: value
            for (name, labels), value in samples.items() if name == "kadshare_dht_events_total"
        }
        assert dht_events.get("requests_out", 0) >= 1, dht_events
        other = (await http.get(rest_url(b) + "/metrics")).text
        assert "kadshare_bytes_served_total 0.0" in other


class TestRestart:
    async def test_keeps_node_id_contacts_and_cache(
        self, peers: Peers, http: httpx.AsyncClient, tmp_path: Path
    ) -> None:
        a = await peers.start()
        base = tmp_path / "restarting"
        b = await peers.start({"big.bin": content(2_500_000, 9), "s.txt": b"s"}, base=base,
                              join=a)
        assert b.catalog.hash_calls == 2
        first_id = b.info["node_id"]
        await b.stop(graceful=True)
        again = await peers.start(base=base)  # no bootstrap given
        assert again.info["node_id"] == first_id
        assert again.catalog.hash_calls == 0  # hashes came from the cache
        assert (await http.get(rest_url(again) + "/status")).json()["files"] == 2
        table = (await http.get(rest_url(again) + "/peers")).json()["peers"]
        assert a.info["node_id"] in {p["node_id"] for p in table}  # rejoined via contacts

    async def test_unfinished_upload_of_a_killed_run_is_removed(
        self, peers: Peers, tmp_path: Path
    ) -> None:
        share = tmp_path / "up" / "share"
        share.mkdir(parents=True)
        (share / ".kadshare-upload-0123456789abcdef.part").write_bytes(b"half an upload")
        (share / "kept.txt").write_bytes(b"kept")
        data = tmp_path / "up" / "data"
        data.mkdir()
        (data / ".hashcache.msgpack.k2j3h4.tmp").write_bytes(b"torn write")
        await peers.start(base=tmp_path / "up")
        assert sorted(p.name for p in share.iterdir()) == ["kept.txt"]
        assert not list(data.glob("*.tmp"))

    async def test_one_data_folder_one_peer(self, peers: Peers, tmp_path: Path) -> None:
        await peers.start(base=tmp_path / "same")
        with pytest.raises(ConfigError):
            await peers.start(base=tmp_path / "same")

    async def test_unreadable_share_is_a_config_error(self, peers: Peers, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            await peers.start(share_dir=tmp_path / "missing")


class TestConfig:
    def test_rest_timeout_must_outlast_the_waits_it_contains(self, tmp_path: Path) -> None:
        """Sanic cutting a request before the lookup's own 504 would be a dropped
        connection instead of an answer."""
        config = NodeConfig(data_dir=tmp_path).validate()
        with pytest.raises(ValueError, match="rest_response_timeout"):
            config.with_changes(lookup_timeout=200.0)
        assert config.with_changes(lookup_timeout=200.0, rest_response_timeout=300)

    async def test_a_bad_config_is_refused_before_anything_starts(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="announce_parallel"):
            await Node.start(NodeConfig(data_dir=tmp_path / "d", announce_parallel=0))
        assert not (tmp_path / "d").exists()


class TestAdvertisedAddress:
    def test_wildcard_bind_advertises_a_dialable_address(self) -> None:
        from pserver.membership import advertised_host

        assert advertised_host("127.0.0.1", ()) == "127.0.0.1"
        assert advertised_host("0.0.0.0", (("127.0.0.1", 9),)) == "127.0.0.1"
        assert advertised_host("0.0.0.0", ()) == "127.0.0.1"
        assert advertised_host("::", ()) == "::1"

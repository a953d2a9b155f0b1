"""The download engine against real gRPC providers on loopback, some of them faulty."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from kadcommon.merkle import CHUNK_SIZE
from pclient import (
    DestinationError,
    DownloadConfig,
    NoProviders,
    TransferFailed,
    download_file,
)
from pclient.download import DownloadProgress, part_paths
from tests.pclient.provider import Behaviour

ROOT = Path(__file__).resolve().parents[2]


def fast(**kw: object) -> DownloadConfig:
    """One-chunk runs so that every source gets work on a 6 MiB file; short stall timeout."""
    kw.setdefault("run_bytes", 128 * 1024)
    kw.setdefault("stall_timeout", 5.0)
    return DownloadConfig(**kw)  # type: ignore[arg-type]


class TestMultiSource:
    async def test_three_sources_share_the_work_and_file_verifies(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        provs = [await make_provider(Behaviour(delay=0.002)) for _ in range(3)]
        result = await download_file(
            file_id, tmp_path / "out", [p.address for p in provs], config=fast(sources=3)
        )
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.path.name == shared_file.name
        assert len(result.sources) >= 2
        assert sum(result.sources.values()) == result.size == result.fetched_bytes
        assert not result.dropped
        assert not list((tmp_path / "out").glob("*.part*"))

    async def test_corrupting_source_is_dropped_and_file_is_right(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        bad = await make_provider(Behaviour(corrupt_chunks=set(range(40))))
        good = [await make_provider(Behaviour(delay=0.002)) for _ in range(2)]
        providers = [bad.address] + [p.address for p in good]
        result = await download_file(file_id, tmp_path, providers, config=fast(sources=3))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "corrupt" in result.dropped[bad.address]
        assert bad.address not in result.sources
        # dropped after its first (bad) chunk on each of its streams
        assert bad.bytes_sent <= CHUNK_SIZE * DownloadConfig().streams_per_source

    async def test_bad_chunk_inside_the_pipeline_drops_the_source_after_it(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        """Chunks are verified while later ones arrive (sources.PIPELINE): a bad chunk
        after good ones still drops its source, only the chunks before it count for
        that source, and the rest comes from the spare."""
        bad = await make_provider(Behaviour(corrupt_chunks={3}))
        good = await make_provider()
        config = fast(sources=1, streams_per_source=1,
                      run_bytes=len(shared_file.read_bytes()))  # one run, one stream
        result = await download_file(file_id, tmp_path, [bad.address, good.address],
                                     config=config)
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "corrupt" in result.dropped[bad.address] and "#3" in result.dropped[bad.address]
        assert result.sources[bad.address] == 3 * CHUNK_SIZE
        assert sum(result.sources.values()) == result.size

    async def test_provider_lying_in_getinfo_is_dropped_by_the_file_id_alone(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        liar = await make_provider(Behaviour(bad_info=True))
        honest = await make_provider()
        result = await download_file(file_id, tmp_path, [liar.address, honest.address],
                                     config=fast(sources=2))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "does not hash to the file id" in result.dropped[liar.address]
        assert liar.bytes_sent == 0

    async def test_consistent_liar_is_rejected_before_any_chunk_is_fetched(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        """Its chunk list matches the bytes it serves; only the Merkle id exposes it."""
        liar = await make_provider(Behaviour(lie_consistently=True))
        with pytest.raises(TransferFailed, match="does not hash to the file id"):
            await download_file(file_id, tmp_path, [liar.address], config=fast())
        assert liar.bytes_sent == 0
        honest = await make_provider()
        result = await download_file(file_id, tmp_path, [liar.address, honest.address],
                                     config=fast(sources=2))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert liar.bytes_sent == 0 and liar.address in result.dropped

    async def test_provider_with_another_chunk_size_is_dropped_with_the_reason(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        odd = await make_provider(chunk_size=64 * 1024)
        right = await make_provider()
        result = await download_file(file_id, tmp_path, [odd.address, right.address],
                                     config=fast(sources=2))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "chunk size of 65536" in result.dropped[odd.address]

    async def test_stalled_source_times_out_and_download_continues(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        stalled = await make_provider(Behaviour(stall_after=CHUNK_SIZE + 64 * 1024))
        with pytest.raises(TransferFailed, match="stalled"):  # alone, it fails the download
            await download_file(file_id, tmp_path, [stalled.address],  # (one stream: its
                                config=fast(stall_timeout=0.5, streams_per_source=1))  # 1st chunk)
        # with a second (paced, so the stall fires first) source the download completes
        paced = await make_provider(Behaviour(delay=0.05))
        result = await download_file(
            file_id, tmp_path, [stalled.address, paced.address],
            config=fast(sources=2, stall_timeout=0.5),
        )
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "stalled" in result.dropped[stalled.address]
        assert result.resumed_bytes > 0  # the first attempt's chunk was kept

    async def test_fast_source_does_more_of_the_work(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        slow = await make_provider(Behaviour(delay=0.05))
        quick = await make_provider()
        result = await download_file(file_id, tmp_path, [slow.address, quick.address],
                                     config=fast(sources=2))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.sources[quick.address] > 2 * result.sources.get(slow.address, 0)

    async def test_last_chunk_owed_by_a_crawling_source_is_fetched_elsewhere(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        # one message every 20 s: never "stalled" (timeout 60 s), but useless
        crawler = await make_provider(Behaviour(delay=20.0))
        quick = await make_provider()
        result = await download_file(file_id, tmp_path, [crawler.address, quick.address],
                                     config=fast(sources=2, stall_timeout=60.0))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert crawler.address not in result.sources
        assert result.sources[quick.address] == result.size

    async def test_ramp_up_adds_sources_while_they_raise_the_rate(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        # paced peers (~2 MB/s each): every added source adds its rate, so all are kept
        paced = [await make_provider(Behaviour(delay=0.03)) for _ in range(3)]
        result = await download_file(
            file_id, tmp_path, [p.address for p in paced],
            config=fast(sources=3, adaptive_bytes=1024 * 1024, probe_seconds=0.15),
        )
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert paced[0].address in result.sources and len(result.sources) >= 2

    async def test_progress_reports_reach_the_total(self, make_provider, file_id, tmp_path):
        prov = await make_provider()
        seen: list[DownloadProgress] = []
        result = await download_file(file_id, tmp_path, [prov.address], progress=seen.append,
                                     config=fast())
        assert seen and seen[-1].done == seen[-1].total == result.size
        assert all(a.done <= b.done for a, b in zip(seen, seen[1:], strict=False))

    async def test_spare_provider_replaces_a_failing_one(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        flaky = await make_provider(Behaviour(fail_after=256 * 1024))
        spare = await make_provider()
        result = await download_file(file_id, tmp_path, [flaky.address, spare.address],
                                     config=fast(sources=1))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert flaky.address in result.dropped and spare.address in result.sources


    async def test_max_rate_is_applied(self, make_provider, shared_file, file_id, tmp_path):
        prov = await make_provider()
        result = await download_file(file_id, tmp_path, [prov.address],
                                     config=fast(max_rate=4 * CHUNK_SIZE))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.throttled_seconds > 0  # 6 MiB at 4 MiB/s after a 1 MiB burst
        free = await download_file(file_id, tmp_path / "again", [prov.address], config=fast())
        assert free.throttled_seconds == 0


class TestStreamsPerSource:
    async def test_one_source_serves_several_streams_and_every_chunk_verifies(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider(Behaviour(delay=0.002))
        result = await download_file(file_id, tmp_path, [prov.address],
                                     config=fast(streams_per_source=3))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert prov.most_streams >= 2
        assert result.sources == {prov.address: result.size} == {prov.address: prov.bytes_sent}

    async def test_a_bad_chunk_on_any_stream_drops_the_whole_source(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        bad = await make_provider(Behaviour(corrupt_chunks={5}, delay=0.002))
        good = await make_provider()
        result = await download_file(file_id, tmp_path, [bad.address, good.address],
                                     config=fast(sources=1, streams_per_source=3))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "corrupt" in result.dropped[bad.address]

    async def test_a_source_refusing_extra_streams_keeps_serving_on_one(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider(Behaviour(max_streams=1, delay=0.002))
        result = await download_file(file_id, tmp_path, [prov.address],
                                     config=fast(streams_per_source=4))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert prov.refused_streams >= 1 and not result.dropped
        assert result.sources == {prov.address: result.size}

    async def test_a_source_refusing_every_stream_is_dropped_for_the_spare(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        full = await make_provider(Behaviour(max_streams=0))
        spare = await make_provider()
        result = await download_file(file_id, tmp_path, [full.address, spare.address],
                                     config=fast(sources=1, streams_per_source=3))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert "serving at most 0 streams" in result.dropped[full.address]
        assert full.refused_streams >= 3 and full.bytes_sent == 0
        assert result.sources == {spare.address: result.size}

    async def test_interrupted_multi_stream_download_resumes_from_its_state(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        flaky = await make_provider(Behaviour(fail_after=3 * CHUNK_SIZE, delay=0.002))
        with pytest.raises(TransferFailed):
            await download_file(file_id, tmp_path, [flaky.address],
                                config=fast(streams_per_source=2))
        good = await make_provider()
        result = await download_file(file_id, tmp_path, [good.address],
                                     config=fast(streams_per_source=2))
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.resumed_bytes >= 2 * CHUNK_SIZE
        assert result.fetched_bytes + result.resumed_bytes == result.size


class TestResume:
    async def test_state_claims_are_rehashed_on_every_thread_and_bad_ones_refetched(
        self, make_provider, shared_file, file_id, tmp_path, monkeypatch
    ):
        """A state that claims every chunk, over a part file with one bad chunk in each
        thread's share: only those chunks are fetched again, the others are kept."""
        from pclient.download import partfile

        monkeypatch.setattr(partfile, "VERIFY_THREADS", 2)
        data = bytearray(shared_file.read_bytes())
        chunks = -(-len(data) // CHUNK_SIZE)
        spoiled = {1, chunks - 2}  # one in the first share, one in the second
        for i in spoiled:
            data[i * CHUNK_SIZE + 7] ^= 0xFF
        out = tmp_path / "out"
        out.mkdir()
        part, state = part_paths(out, file_id)
        part.write_bytes(bytes(data))
        state.write_text(json.dumps({
            "version": partfile.STATE_VERSION, "file_id": file_id, "name": shared_file.name,
            "size": len(data), "chunk_size": CHUNK_SIZE, "done": ("01" * chunks)}))
        prov = await make_provider()
        result = await download_file(file_id, out, [prov.address], config=fast())
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.fetched_bytes == len(spoiled) * CHUNK_SIZE
        assert result.resumed_bytes == len(data) - len(spoiled) * CHUNK_SIZE
        assert not part.exists() and not state.exists()


async def interrupted(make_provider, file_id: str, out: Path) -> dict:
    """A download that loses its only source after 3 chunks; its resume state."""
    flaky = await make_provider(Behaviour(fail_after=3 * CHUNK_SIZE))
    with pytest.raises(TransferFailed):
        await download_file(file_id, out, [flaky.address],
                            config=fast(sources=1, streams_per_source=1))
    doc = json.loads(part_paths(out, file_id)[1].read_text())
    assert bytes.fromhex(doc["done"]).count(1) >= 3
    return doc


class TestTrustedResume:
    """A state saved after an fdatasync of the part file, whose part file is unchanged
    since (size, pinned mtime, inode, device), is taken without re-hashing; anything
    else is re-hashed (partfile.py, docs/PROTOCOL.md "Resume state")."""

    async def test_synced_unchanged_state_is_trusted_and_the_file_verifies(
        self, make_provider, shared_file, file_id, tmp_path, caplog
    ):
        doc = await interrupted(make_provider, file_id, tmp_path)
        part = part_paths(tmp_path, file_id)[0]
        st = part.stat()
        assert doc["part"] == {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                               "ino": st.st_ino, "dev": st.st_dev}
        caplog.set_level("INFO", logger="pclient.download.partfile")
        result = await download_file(file_id, tmp_path, [(await make_provider()).address])
        assert "trusted from the synced state" in caplog.text
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.resumed_bytes == bytes.fromhex(doc["done"]).count(1) * CHUNK_SIZE
        assert result.fetched_bytes + result.resumed_bytes == result.size
        assert result.path.stat().st_mtime_ns != doc["part"]["mtime_ns"]  # unpinned

    async def test_part_file_altered_after_the_state_is_rehashed_and_refetched(
        self, make_provider, shared_file, file_id, tmp_path, caplog
    ):
        doc = await interrupted(make_provider, file_id, tmp_path)
        part = part_paths(tmp_path, file_id)[0]
        size = part.stat().st_size
        with open(part, "r+b") as fh:  # noqa: ASYNC230 - same size, other bytes in chunk 1
            fh.seek(CHUNK_SIZE + 100)
            fh.write(b"\x00" * 64)
        assert part.stat().st_size == size
        assert part.stat().st_mtime_ns != doc["part"]["mtime_ns"]
        caplog.set_level("INFO", logger="pclient.download.partfile")
        result = await download_file(file_id, tmp_path, [(await make_provider()).address])
        assert "mtime_ns changed" in caplog.text and "re-hashing" in caplog.text
        assert result.path.read_bytes() == shared_file.read_bytes()
        claimed = bytes.fromhex(doc["done"]).count(1)
        assert result.resumed_bytes == (claimed - 1) * CHUNK_SIZE  # chunk 1 refetched
        assert result.fetched_bytes + result.resumed_bytes == result.size

    async def test_state_of_another_part_file_is_not_trusted(
        self, make_provider, shared_file, file_id, tmp_path, caplog
    ):
        """A copy of the part file (same bytes and mtime, another inode) is not the file
        the state recorded: its claims are re-hashed, with a log line naming why."""
        await interrupted(make_provider, file_id, tmp_path)
        part = part_paths(tmp_path, file_id)[0]
        copy = part.with_name("copy")
        shutil.copy2(part, copy)
        os.replace(copy, part)
        caplog.set_level("INFO", logger="pclient.download.partfile")
        result = await download_file(file_id, tmp_path, [(await make_provider()).address])
        assert "does not match its part file (ino changed" in caplog.text
        assert "re-hashed" in caplog.text and "trusted" not in caplog.text
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.resumed_bytes > 0


class TestFailures:
    async def test_no_providers(self, file_id, tmp_path):
        with pytest.raises(NoProviders):
            await download_file(file_id, tmp_path, [])

    async def test_every_provider_failing_gives_a_reason_each_and_keeps_state(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        a = await make_provider(Behaviour(fail_after=CHUNK_SIZE + 512 * 1024))
        b = await make_provider(Behaviour(corrupt_chunks={2, 3, 4, 5, 6}))
        with pytest.raises(TransferFailed) as info:  # (one stream each: ``a`` completes
            await download_file(file_id, tmp_path, [a.address, b.address],  # its 1st chunk)
                                config=fast(sources=2, streams_per_source=1))
        assert set(info.value.reasons) == {a.address, b.address}
        assert a.address in str(info.value) and "corrupt" in str(info.value)
        assert not (tmp_path / shared_file.name).exists()
        assert part_paths(tmp_path, file_id)[1].exists()

        # the sources are gone; a rerun with a good one fetches only the rest
        good = await make_provider()
        result = await download_file(file_id, tmp_path, [good.address], config=fast())
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert result.resumed_bytes > 0
        assert result.fetched_bytes + result.resumed_bytes == result.size
        assert good.bytes_sent < result.size
        assert not part_paths(tmp_path, file_id)[1].exists()

    async def test_unreachable_and_not_sharing_providers_are_named(
        self, make_provider, file_id, tmp_path
    ):
        sock_port = 1  # nothing listens on port 1 of loopback
        with pytest.raises(TransferFailed) as info:
            await download_file("ab" * 32, tmp_path, [f"127.0.0.1:{sock_port}"],
                                config=fast(info_timeout=5.0))
        assert "unreachable" in str(info.value)
        prov = await make_provider()
        with pytest.raises(TransferFailed) as info:
            await download_file("cd" * 32, tmp_path, [prov.address])
        assert "does not share this file" in str(info.value)

    async def test_existing_different_file_needs_force(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider()
        target = tmp_path / shared_file.name
        target.write_bytes(b"my own precious notes")
        with pytest.raises(DestinationError, match="--force"):
            await download_file(file_id, tmp_path, [prov.address])
        assert target.read_bytes() == b"my own precious notes"
        result = await download_file(file_id, tmp_path, [prov.address], config=fast(force=True))
        assert target.read_bytes() == shared_file.read_bytes()
        assert result.fetched_bytes == result.size

    async def test_existing_identical_file_is_kept_without_fetching(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        prov = await make_provider()
        (tmp_path / shared_file.name).write_bytes(shared_file.read_bytes())
        result = await download_file(file_id, tmp_path, [prov.address])
        assert result.already_present and prov.bytes_sent == 0

    async def test_second_download_into_the_same_place_is_refused_while_first_runs(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        slow = await make_provider(Behaviour(delay=0.05))
        state = part_paths(tmp_path, file_id)[1]
        first = asyncio.create_task(download_file(file_id, tmp_path, [slow.address],
                                                  config=fast()))
        for _ in range(400):  # bounded wait until the first one has started writing
            if state.exists() or first.done():
                break
            await asyncio.sleep(0.025)
        assert not first.done()
        with pytest.raises(DestinationError, match="another download"):
            await download_file(file_id, tmp_path, [slow.address], config=fast())
        result = await first
        assert result.path.read_bytes() == shared_file.read_bytes()

    async def test_destination_under_a_regular_file_is_a_clear_error(
        self, make_provider, file_id, tmp_path
    ):
        prov = await make_provider()
        (tmp_path / "plain").write_text("x")
        with pytest.raises(DestinationError, match="not a directory|cannot"):
            await download_file(file_id, tmp_path / "plain" / "sub", [prov.address])


class TestProviderKilled:
    async def test_kill_9_of_a_provider_mid_download_finishes_from_the_others(
        self, make_provider, shared_file, file_id, tmp_path
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.pclient.provider", str(shared_file), "--delay", "0.01",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # type: ignore[union-attr]
            victim = f"127.0.0.1:{int(line)}"
            others = [await make_provider(Behaviour(delay=0.01)) for _ in range(2)]
            killed: list[int] = []

            def progress(p: DownloadProgress) -> None:
                if not killed and p.done >= p.total // 4:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append(p.done)

            result = await download_file(
                file_id, tmp_path, [victim] + [o.address for o in others],
                config=fast(sources=3), progress=progress,
            )
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        assert killed and killed[0] < result.size
        assert result.path.read_bytes() == shared_file.read_bytes()
        assert victim in result.dropped


def test_public_api_is_complete():
    import pclient

    exported = set(pclient.__all__)
    public = {n for n in dir(pclient) if not n.startswith("_")} - {
        "client", "download", "errors", "render", "cli", "usage", "grpcutil"}
    assert public <= exported
    assert all(hasattr(pclient, name) for name in exported)
    assert issubclass(pclient.NoProviders, pclient.ClientError)
    assert issubclass(pclient.ChecksumMismatch, pclient.TransferFailed)


def test_pclient_never_imports_pserver():
    import subprocess

    code = ("import sys, pclient, pclient.cli; "
            "sys.exit(any(m.split('.')[0] in ('pserver', 'dht') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_download_config_refuses_a_bad_value_by_name():
    config = DownloadConfig(sources=2)
    assert config.with_changes(max_rate=1024).max_rate == 1024
    with pytest.raises(ValueError, match="sources"):
        config.with_changes(sources=0)
    with pytest.raises(ValueError, match="adaptive_gain"):
        DownloadConfig(adaptive_gain=0.5)

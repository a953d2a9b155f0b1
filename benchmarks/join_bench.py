#!/usr/bin/env python3
"""What a join costs: datagrams, bytes and CPU per joining node (issue 16; not a test).

Starts ``--nodes`` DhtNodes in this process on 127.0.0.1, each joining through the
first one (bootstrap = ping + lookup of its own id).  For the last ``--measured`` joins
it counts the joiner's datagrams and bytes sent and received and the process CPU time
(every node's share: a join costs the network, not only the joiner) until bootstrap
returns.  Written against the public DhtNode API and the datagram layer's ``_send`` /
``datagram_received``, so the same script measures any revision:

    nice -n 10 .venv/bin/python benchmarks/join_bench.py                      # this tree
    PYTHONPATH=OTHER_CHECKOUT nice -n 10 .venv/bin/python benchmarks/join_bench.py  # its code

With ``--proofs`` it also times one id proof alone (sign by the prover, check by the
asker) and prints the size of a ping and its reply with and without the proof.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import dht  # noqa: E402
from dht import DhtConfig, DhtNode  # noqa: E402


class Meter:
    """Counts one protocol's datagrams and bytes in each direction."""

    def __init__(self, protocol: Any) -> None:
        self.out = self.inn = self.bytes_out = self.bytes_in = 0
        send, receive = protocol._send, protocol.datagram_received

        def counted_send(data: bytes, addr: Any) -> None:
            self.out += 1
            self.bytes_out += len(data)
            send(data, addr)

        def counted_receive(data: bytes, addr: Any) -> None:
            self.inn += 1
            self.bytes_in += len(data)
            receive(data, addr)

        protocol._send = counted_send
        protocol.datagram_received = counted_receive


async def joins(n: int, measured: int) -> list[dict[str, float]]:
    cfg = DhtConfig.for_tests()
    nodes: list[DhtNode] = []
    rows: list[dict[str, float]] = []
    try:
        for i in range(n):
            node = DhtNode(config=cfg)
            await node.listen(port=0, interface="127.0.0.1")
            nodes.append(node)
            if i == 0:
                continue
            meter = Meter(node.protocol)
            cpu, wall = time.process_time(), time.perf_counter()
            await node.bootstrap([("127.0.0.1", nodes[0].port)])
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await asyncio.sleep(0.2)  # proofs asked after replies land now
            if i >= n - measured:
                rows.append({"cpu_ms": cpu * 1e3, "wall_ms": wall * 1e3, "out": meter.out,
                             "in": meter.inn, "bytes_out": meter.bytes_out,
                             "bytes_in": meter.bytes_in, "contacts": len(node.contacts())})
    finally:
        for node in nodes:
            node.stop()
    return rows


def proof_costs(rounds: int) -> None:
    from dht.admission import NONCE_LEN, check_proof, make_proof
    from dht.identity import Identity
    from dht.transport import REQUEST, RESPONSE, encode_datagram

    prover, asker = Identity.generate(), Identity.generate()
    nonce = bytes(NONCE_LEN)
    t = time.process_time()
    for _ in range(rounds):
        proof = make_proof(prover, nonce, asker.node_id)
    sign_us = (time.process_time() - t) / rounds * 1e6
    body = {"id": prover.node_id, **proof}
    t = time.process_time()
    for _ in range(rounds):
        assert check_proof(body, nonce, asker.node_id, prover.node_id)
    check_us = (time.process_time() - t) / rounds * 1e6
    mid = bytes(8)
    sizes = {
        "ping": len(encode_datagram(REQUEST, mid, ["ping", [asker.node_id]])),
        "ping+nonce": len(encode_datagram(REQUEST, mid, ["ping", [asker.node_id, nonce]])),
        "reply": len(encode_datagram(RESPONSE, mid, {"id": prover.node_id})),
        "reply+proof": len(encode_datagram(RESPONSE, mid, body)),
    }
    print(f"id proof: sign {sign_us:.0f} us (prover), check {check_us:.0f} us (asker), "
          f"{rounds} rounds")
    print("datagram bytes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--measured", type=int, default=32)
    ap.add_argument("--proofs", action="store_true")
    args = ap.parse_args()
    print(f"dht from {Path(dht.__file__).parent}")
    if args.proofs:
        proof_costs(2000)
    rows = asyncio.run(joins(args.nodes, min(args.measured, args.nodes - 1)))
    print(f"{len(rows)} joins into {args.nodes} nodes (medians; mean in brackets):")
    for key in ("cpu_ms", "wall_ms", "out", "in", "bytes_out", "bytes_in", "contacts"):
        vals = [r[key] for r in rows]
        print(f"  {key:10} {statistics.median(vals):10.1f}  [{statistics.fmean(vals):.1f}]")


if __name__ == "__main__":
    main()

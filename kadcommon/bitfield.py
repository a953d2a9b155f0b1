"""The ``have`` bitfield of a partial provider: bit i set = chunk i is held.

Packed ceil(n / 8) bytes, chunk i at byte i // 8, bit i % 8 (least significant first).
In memory both sides keep one byte per chunk (0/1), which is simpler to index.
"""

from __future__ import annotations


def pack(flags: bytes | bytearray) -> bytes:
    """One byte per chunk (0 or not) -> the packed bitfield."""
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack(bits: bytes, chunks: int) -> bytearray:
    """The packed bitfield of ``chunks`` chunks -> one byte (0/1) per chunk.

    Raises ValueError if its length is not ceil(chunks / 8) or a bit past the last chunk
    is set (a peer that sends either is confused; better to say so than to guess).
    """
    if len(bits) != (chunks + 7) // 8:
        raise ValueError(f"a bitfield of {len(bits)} bytes for {chunks} chunks "
                         f"(want {(chunks + 7) // 8})")
    flags = bytearray(chunks)
    for i in range(chunks):
        if bits[i >> 3] >> (i & 7) & 1:
            flags[i] = 1
    if chunks % 8 and bits[-1] >> (chunks % 8):
        raise ValueError("a bitfield sets bits past the last chunk")
    return flags

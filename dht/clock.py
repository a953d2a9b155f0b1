"""The DHT's one clock and one source of randomness (the seam of issue 11).

Every time read and random choice in ``dht/`` goes through here, so a simulation that
runs the unmodified DHT on a virtual-time event loop only has to override the loop's
``time()`` (and give it a ``wall_time()``), and install a seeded ``random.Random`` to
make identities, message ids, jitter and refresh targets repeat bit for bit.

* ``now()``  monotonic seconds: the running loop's ``time()`` (``time.monotonic()``
  outside a loop).  asyncio's own timers use the same clock, so a deadline computed
  from ``now()`` and a ``call_later`` always agree, real or virtual.
* ``wall()`` epoch seconds for record ``issued_at`` and expiry: the running loop's
  ``wall_time()`` if it has one, else ``time.time()``.
* ``rng()``  the ``random.Random`` of the current context (``use_rng``/``set_rng``
  install one, e.g. per simulated node); by default one module-wide generator seeded
  from ``os.urandom``.
* ``random_bytes(n)`` unpredictable bytes (message ids) from ``os.urandom`` unless a
  seeded generator is installed: a Mersenne Twister's output can be predicted from
  enough of it, and message ids are what stops an off-path peer forging replies.
* ``seeded_rng()`` the installed generator or None, for the few callers (identity
  generation) that must use the operating system's randomness by default.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_default_rng = random.Random(os.urandom(32))
_current_rng: ContextVar[random.Random | None] = ContextVar("dht_rng", default=None)


def now() -> float:
    """Monotonic seconds on the running loop's clock (``time.monotonic()`` without one)."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def wall() -> float:
    """Epoch seconds: the running loop's ``wall_time()`` if defined, else ``time.time()``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return time.time()
    wall_time = getattr(loop, "wall_time", None)
    return wall_time() if wall_time is not None else time.time()


def rng() -> random.Random:
    """The random generator of the current context (seeded one if installed)."""
    current = _current_rng.get()
    return _default_rng if current is None else current


def seeded_rng() -> random.Random | None:
    """The generator installed with ``use_rng``/``set_rng``, or None for the default."""
    return _current_rng.get()


def random_bytes(n: int) -> bytes:
    """``n`` random bytes: ``os.urandom`` unless a seeded generator is installed."""
    current = _current_rng.get()
    return os.urandom(n) if current is None else current.randbytes(n)


def set_rng(generator: random.Random | None) -> Token:
    """Install ``generator`` for the current context (None: back to the default).

    Returns the token for ``reset_rng``.  Tasks created afterwards inherit it, as
    contextvars do, so set it before a simulated node starts its tasks.
    """
    if generator is not None and not isinstance(generator, random.Random):
        raise TypeError("set_rng expects a random.Random or None")
    return _current_rng.set(generator)


def reset_rng(token: Token) -> None:
    """Undo one ``set_rng``."""
    _current_rng.reset(token)


@contextmanager
def use_rng(generator: random.Random | None) -> Iterator[random.Random]:
    """Run a block (and the tasks it creates) with ``generator`` as ``rng()``."""
    token = set_rng(generator)
    try:
        yield rng()
    finally:
        _current_rng.reset(token)

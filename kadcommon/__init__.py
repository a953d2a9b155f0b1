"""Small helpers every kadshare package may import (file ids, addresses, atomic writes).

This package imports none of dht, pserver, pclient, protos or simulations, so any of
them can depend on it without creating a cycle.
"""

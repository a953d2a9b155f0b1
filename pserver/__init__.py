"""kadshare pserver: the peer (share folder, gRPC transfers, REST app, ``kadshare-node``).

Start a peer in-process with ``node = await Node.start(NodeConfig(...))`` and stop it with
``await node.stop()``; ``node.info`` is the JSON line the CLI prints.
"""

__version__ = "0.1.0"

__all__ = ["Node", "NodeConfig", "__version__"]


def __getattr__(name: str):  # lazy: importing pserver.config must not pull in grpc and sanic
    if name == "Node":
        from pserver.node import Node

        return Node
    if name == "NodeConfig":
        from pserver.config import NodeConfig

        return NodeConfig
    raise AttributeError(name)

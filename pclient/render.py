"""Human output of the ``kadshare`` command: tables, sizes, progress bars, JSON."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from kadcommon.units import human_duration, human_size

if TYPE_CHECKING:  # rich is imported on first use: `kadshare get` off a terminal never needs it
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from pclient.download import DownloadProgress

ID_PREFIX = 12
FIGURES_WIDTH = 72  # columns the bar, bytes, rate, ETA and sources need


def short_id(value: Any) -> str:
    return str(value or "")[:ID_PREFIX]


def print_json(doc: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(doc, sort_keys=True) + "\n")
    out.flush()


def _console(out: TextIO | None = None) -> Console:
    from rich.console import Console

    return Console(file=out or sys.stdout, highlight=False, soft_wrap=False)


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    return table


def search_table(results: list[dict[str, Any]], out: TextIO | None = None) -> None:
    if not results:
        _console(out).print("no matches: peers answered, and no file name has all these words")
        return
    table = _table("NAME", "SIZE", "ID", "PROVIDERS", right=("SIZE", "PROVIDERS"))
    for hit in results:
        table.add_row(
            str(hit.get("name", "")), human_size(hit.get("size")), short_id(hit.get("file_id")),
            str(hit.get("providers", "?")),
        )
    _console(out).print(table)


def files_table(files: list[dict[str, Any]], out: TextIO | None = None) -> None:
    if not files:
        _console(out).print("this node shares no files")
        return
    table = _table("NAME", "SIZE", "ID", right=("SIZE",))
    for item in files:
        table.add_row(
            str(item.get("name", "")), human_size(item.get("size")), short_id(item.get("file_id"))
        )
    _console(out).print(table)


def providers_table(
    file_id: str, providers: list[dict[str, Any]], out: TextIO | None = None
) -> None:
    console = _console(out)
    if not providers:
        console.print(f"nobody provides {short_id(file_id)}")
        return
    table = _table("NODE", "GRPC", "NAME", "SIZE", "EXPIRES IN", right=("SIZE", "EXPIRES IN"))
    now = time.time()
    for prov in providers:
        expires = prov.get("expires")
        left = human_duration(expires - now) if isinstance(expires, (int, float)) else "?"
        table.add_row(
            short_id(prov.get("node_id")), str(prov.get("grpc", "")), str(prov.get("name", "")),
            human_size(prov.get("size")), left,
        )
    console.print(table)


def peers_table(peers: list[dict[str, Any]], out: TextIO | None = None) -> None:
    if not peers:
        _console(out).print("no known peers")
        return
    table = _table("NODE", "HOST", "DHT PORT", right=("DHT PORT",))
    for peer in peers:
        table.add_row(short_id(peer.get("node_id")), str(peer.get("host", "")),
                      str(peer.get("dht_port", "")))
    _console(out).print(table)


def status_table(status: dict[str, Any], node_url: str, out: TextIO | None = None) -> None:
    table = _table("", "")
    table.show_header = False
    table.add_row("node", node_url)
    for key in ("node_id", "host", "dht_port", "grpc_port", "rest_port", "peers", "files",
                "records", "transfers", "network"):
        if key in status:
            table.add_row(key.replace("_", " "), str(status[key]))
    _console(out).print(table)


class ProgressBar:
    """One live bar (bytes, rate, ETA, active sources); silent when not on a terminal."""

    def __init__(self, label: str, *, enabled: bool | None = None, out: TextIO | None = None):
        stream = out or sys.stdout
        self.enabled = stream.isatty() if enabled is None else enabled
        self.label = label
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = False
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.table import Column

            console = Console(file=stream)
            # the name gives way (cut with an ellipsis), never the bytes, rate and ETA
            name_width = max(8, console.width - FIGURES_WIDTH)
            self._progress = Progress(
                TextColumn("{task.description}", table_column=Column(
                    max_width=name_width, no_wrap=True, overflow="ellipsis")),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[sources]}"),
                console=console,
                transient=False,
                refresh_per_second=8,
            )

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, sources="")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._progress is not None:
            if exc_type is None and self._task is not None:
                self._progress.update(self._task, sources="done")
            self._progress.stop()

    def download(self, p: DownloadProgress) -> None:
        """Progress callback for ``Client.download``."""
        if self._progress is None or self._task is None:
            return
        sources = f"{p.active_sources} source{'s' if p.active_sources != 1 else ''}"
        if not self._started:
            # reset() drops rate samples, so resumed bytes do not count as speed
            self._started = True
            self._progress.reset(self._task, total=p.total, completed=p.done,
                                 description=p.name, sources=sources)
            return
        self._progress.update(self._task, total=p.total, completed=p.done,
                              description=p.name, sources=sources)

    def upload(self, sent: int, total: int) -> None:
        """Progress callback for ``Client.upload``."""
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, total=total, completed=sent, sources="")

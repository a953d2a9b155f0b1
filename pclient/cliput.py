"""`kadshare put FILE|DIR`: send a file, or a folder file by file, to a peer that accepts
uploads. The peer checks every name and every file's id before it shares anything."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePath
from typing import Any

from kadcommon.units import human_size
from pclient.cliargs import EXIT_OK, address
from pclient.client import UploadProgress, upload_file
from pclient.folders import put_folder
from pclient.render import ProgressBar, print_json


async def put_command(args: dict[str, Any], as_json: bool) -> int:
    """``kadshare put PATH --to ADDR``: a file, or a folder when PATH is one."""
    peer = address(args["--to"], "--to")
    name = args["--name"] or None
    token = args["--token"] or os.environ.get("KADSHARE_TOKEN") or None
    bar = ProgressBar(PurePath(args["PATH"]).name, enabled=None if not as_json else False)
    if await asyncio.to_thread(os.path.isdir, args["PATH"]):
        return await put_folder_command(args["PATH"], peer, name, token, bar, as_json)
    with bar:
        reply = await upload_file(args["PATH"], peer, bar.upload, name=name, token=token)
    if as_json:
        print_json(reply)
    else:
        print(f"uploaded {reply['name']} ({human_size(reply['size'])}) to {peer}; "
              f"id {reply['file_id']}")
    return EXIT_OK


async def put_folder_command(path: str, peer: str, name: str | None, token: str | None,
                             bar: ProgressBar, as_json: bool) -> int:
    """``kadshare put DIR``: every file as ``DIR/rel/path``, verified by the peer one by one;
    files the peer already holds are not sent again, so a rerun resumes."""

    async def one(src: Path, upload_name: str, progress: UploadProgress | None) -> dict[str, Any]:
        return await upload_file(src, peer, progress, name=upload_name, token=token)

    with bar:
        reply = await put_folder(path, one, name=name, progress=bar.upload)
    if as_json:
        print_json(reply)
    else:
        left_out = len(reply["skipped"])
        skipped = f"; left out {left_out} hidden/link entries" if left_out else ""
        print(f"uploaded folder {reply['name']} ({reply['files']} files, "
              f"{human_size(reply['size'])}) to {peer}; it shares it as "
              f"{reply['shared_as']}{skipped}")
    return EXIT_OK

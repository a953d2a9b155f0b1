"""The one rule for names that arrive from the network and become paths on disk.

Upload names (``pserver.transfer.uploads``) and folder manifest paths
(``kadcommon.manifest``) both end up joined to a folder of ours, so both are checked
here, the same way: a relative POSIX path of visible parts -- no ``..``, ``.``, empty
or hidden part, no absolute path or drive letter, no backslash, control character,
unpaired surrogate or edge white space, at most 255 bytes a part and 4096 in all.
``case_key`` is what two names must not share on a case-insensitive file system.
"""

from __future__ import annotations

MAX_PART_BYTES = 255
MAX_PATH_BYTES = 4096


class UnsafeName(ValueError):
    """A name or path that must not be used on disk; the text says why."""


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _problem(part: str) -> str | None:
    if not part:
        return "empty path component (a leading '/' or '//')"
    if part in (".", ".."):
        return f"path component {part!r}"
    if _byte_len(part) > MAX_PART_BYTES:
        return f"path component longer than {MAX_PART_BYTES} bytes"
    if "\\" in part:
        return "backslash in a path"
    if part.startswith("."):
        return "hidden name (starts with '.')"
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        return "control character in a path"
    if part != part.strip():
        return "path component starts or ends with white space"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in part):
        return "unpaired surrogate in a path"
    return None


def check_part(part: str, what: str = "name") -> str:
    """``part`` if it is one safe path component (a file or folder name), else UnsafeName."""
    problem = _problem(part)
    if problem:
        raise UnsafeName(f"refused {what} {part[:80]!r}: {problem}")
    return part


def check_path(path: str, what: str = "path") -> tuple[str, ...]:
    """The components of a safe relative path (``a/b/c``), else UnsafeName."""
    if not isinstance(path, str) or not path:
        raise UnsafeName(f"refused {what}: it must be a non-empty string")
    shown = repr(path[:80])
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafeName(f"refused {what} {shown}: absolute path")
    if _byte_len(path) > MAX_PATH_BYTES:
        raise UnsafeName(f"refused {what} {shown}: longer than {MAX_PATH_BYTES} bytes")
    parts = tuple(path.split("/"))
    for part in parts:
        problem = _problem(part)
        if problem:
            raise UnsafeName(f"refused {what} {shown}: {problem}")
    return parts


def case_key(name: str) -> str:
    """Equal for names a case-insensitive file system takes for the same entry."""
    return name.casefold()

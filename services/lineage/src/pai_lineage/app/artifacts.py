"""What a `file://` URI holds: size, file count and a content checksum, computed by the server.

The checksum of a single file is `sha256:` over its bytes (what `sha256sum` prints). For a directory
it is `sha256:` over every regular file below it in sorted order of relative POSIX path, each as
`<relative path> NUL <size> NUL <contents>`, so a renamed, added or changed file changes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from pai_common.errors import FailedPrecondition, bad_request

CHUNK = 1 << 20


@dataclass(frozen=True)
class Facts:
    size_bytes: int
    file_count: int
    checksum: str


def local_path(uri: str, field: str) -> pathlib.Path | None:
    """The local path of a `file://` URI; None for other schemes (registered as given)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    if parsed.netloc not in ("", "localhost") or not path.startswith("/"):
        message = f"{uri!r} is not an absolute file:// URI (file:///path)"
        raise bad_request(field, message, "INVALID_URI", uri=uri)
    return pathlib.Path(path)


def inspect(path: pathlib.Path) -> Facts | None:
    """The facts of a file or directory; None when nothing is there."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
        return Facts(path.stat().st_size, 1, f"sha256:{digest.hexdigest()}")
    if not path.is_dir():
        return None
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    size = 0
    for rel, p in files:
        n = p.stat().st_size
        size += n
        digest.update(f"{rel}\0{n}\0".encode())
        with p.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
    return Facts(size, len(files), f"sha256:{digest.hexdigest()}")


async def complete(
    uri: str, size_bytes: int, file_count: int, checksum: str, *, field: str, missing_ok: bool = False
) -> Facts:
    """The facts to register for `uri`: for `file://`, what is there fills those left empty, and a
    given checksum must match; other schemes keep what was given."""
    path = local_path(uri, field)
    if path is None:
        return Facts(size_bytes, file_count, checksum)
    found = await asyncio.to_thread(inspect, path)
    if found is None:
        if missing_ok:
            return Facts(size_bytes, file_count, checksum)
        raise FailedPrecondition("URI_NOT_FOUND", f"nothing exists at {uri}", uri=uri)
    if checksum and checksum != found.checksum:
        raise FailedPrecondition(
            "CHECKSUM_MISMATCH",
            f"{uri} has checksum {found.checksum}, not {checksum}",
            uri=uri,
            expected=checksum,
            actual=found.checksum,
        )
    return Facts(size_bytes or found.size_bytes, file_count or found.file_count, checksum or found.checksum)


@dataclass(frozen=True)
class Files:
    """The local files lineage may read to register them: those under `roots`, or any at all when
    there are none (one machine, where jobs run as the same user anyway). A path is judged after
    following symbolic links, so a link inside a root does not lead outside it."""

    roots: tuple[pathlib.Path, ...] = ()  # resolved (absolute, links followed)

    async def complete(
        self,
        uri: str,
        size_bytes: int,
        file_count: int,
        checksum: str,
        *,
        field: str,
        missing_ok: bool = False,
    ) -> Facts:
        path = local_path(uri, field)
        if path is not None and self.roots:
            real = await asyncio.to_thread(path.resolve)
            if not any(real.is_relative_to(r) for r in self.roots):
                allowed = ", ".join(str(r) for r in self.roots)
                message = f"{uri} is outside the directories lineage may read ({allowed})"
                raise bad_request(field, message, "INVALID_URI", uri=uri)
        return await complete(uri, size_bytes, file_count, checksum, field=field, missing_ok=missing_ok)

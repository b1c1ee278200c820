"""Blobs as files under one directory: the default backend (SPEC §4).

Layout: ``root/ab/cd/<64 hex>`` for the hash ``sha256:abcd...``; writes in progress live
in ``root/.tmp/`` and are renamed into place (``os.replace``, same filesystem) only after
their size and hash matched and the bytes were fsynced, so a reader never sees a partial
or wrong object and a crash leaves at most a stale ``.part`` file in ``.tmp``. Direct
uploads are staged in ``root/.staging/<upload id>`` (written the same way: ``.tmp`` then
rename) until :meth:`FilesystemBlobStore.commit_upload` moves them to ``.tmp``, re-hashes
them there and renames them to their content address.

Direct uploads and downloads go through the roomsync server itself: with a
:class:`~.signing.UrlSigner` and the server's public base URL the store grants
``{public_base_url}/v1/uploads/{upload_id}?hash=..&size=..&exp=..&sig=..`` (PUT) and
``{public_base_url}/v1/blobs/{hash}?exp=..&size=..&sig=..`` (GET) URLs; the server's routes
check them and call :meth:`FilesystemBlobStore.put_upload_stream` /
:meth:`FilesystemBlobStore.read_stream`.

File I/O runs in worker threads (``asyncio.to_thread``) so the event loop never blocks on
the disk. Every ``OSError`` becomes a :class:`~.base.BlobBackendError` naming the
directory, the operation and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

from .base import (
    HASH_PREFIX,
    BlobBackendError,
    BlobMissing,
    StreamVerifier,
    UrlGrant,
    check_size,
    check_upload_id,
    hash_hex,
    one_chunk,
    scrub_verdict,
    staged_verdict,
)
from .signing import UrlSigner

P = ParamSpec("P")
T = TypeVar("T")

_HEX2 = re.compile(r"[0-9a-f]{2}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TMP_DIR = ".tmp"
_STAGING_DIR = ".staging"
_READ_SIZE = 1 << 20

# The operator has to fix the directory: its permissions, a read-only mount, or a path
# that is not a directory.
_PERMISSION_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
}
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class FilesystemBlobStore:
    """Content-addressed files under ``root``. See the module docstring for the layout."""

    name = "filesystem"

    def __init__(
        self,
        root: Path,
        *,
        signer: UrlSigner | None = None,
        public_base_url: str | None = None,
        fsync: bool = True,
        write_buffer: int = 1 << 20,
    ) -> None:
        self.root = Path(root)
        self._tmp = self.root / _TMP_DIR
        self._staging = self.root / _STAGING_DIR
        self._signer = signer
        self._public_base_url = public_base_url
        self._fsync = fsync
        self._write_buffer = max(1, write_buffer)

    # -- paths and errors ------------------------------------------------------------------

    def path_for(self, hash: str) -> Path:
        """Where the object for ``hash`` is (or would be) stored."""
        hex_ = hash_hex(hash)
        return self.root / hex_[:2] / hex_[2:4] / hex_

    def staging_path_for(self, upload_id: str) -> Path:
        """Where the staged bytes of direct upload ``upload_id`` are (or would be)."""
        return self._staging / check_upload_id(upload_id)

    def _error(self, exc: OSError, doing: str) -> BlobBackendError:
        if exc.errno in _PERMISSION_ERRNOS:
            reason = "permission-denied"
        elif exc.errno in _SPACE_ERRNOS:
            reason = "no-space"
        else:
            reason = "unavailable"
        where = f" ({exc.filename})" if exc.filename else ""
        return BlobBackendError(
            f"blob directory {self.root}: cannot {doing}: {exc.strerror or exc}{where}",
            reason=reason,
        )

    async def _io(self, doing: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise self._error(exc, doing) from exc

    def _sync_dir(self, directory: Path) -> None:
        # Make the rename durable; directories cannot be opened for fsync on every platform.
        if not self._fsync or not hasattr(os, "O_DIRECTORY"):
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directories and prove they are writable (BlobBackendError otherwise)."""
        await self._io("create the directory", self._tmp.mkdir, parents=True, exist_ok=True)
        await self._io("create the directory", self._staging.mkdir, exist_ok=True)
        await self.check()

    async def close(self) -> None:
        return None

    def _probe(self) -> None:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="probe.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"roomsync-probe")
            with open(name, "rb") as f:
                if f.read() != b"roomsync-probe":
                    raise OSError(errno.EIO, "probe file read back different bytes", name)
        finally:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    async def check(self) -> None:
        await self._io("write a probe file", self._probe)

    # -- writes ----------------------------------------------------------------------------

    def _create_temp(self, hex_: str) -> tuple[BinaryIO, str]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix=f"{hex_[:16]}.", suffix=".part")
        return os.fdopen(fd, "wb"), name

    def _commit(self, f: BinaryIO, temp: str, final: Path) -> None:
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())
        f.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)
        self._sync_dir(final.parent)

    @staticmethod
    def _discard(f: BinaryIO, temp: str) -> None:
        # Runs on the failure path: the original error matters more than a cleanup error,
        # and a leftover in .tmp is never visible as a blob.
        with contextlib.suppress(OSError):
            f.close()
        with contextlib.suppress(OSError):
            os.unlink(temp)

    async def _write_verified(
        self, verifier: StreamVerifier, final: Path, chunks: AsyncIterable[bytes], what: str
    ) -> None:
        f, temp = await self._io("create a temp file", self._create_temp, verifier.hex)
        committed = False
        try:
            pending = bytearray()
            async for chunk in chunks:
                verifier.update(chunk)
                pending += chunk
                if len(pending) >= self._write_buffer:
                    data, pending = bytes(pending), bytearray()
                    await self._io(f"write {what}", f.write, data)
            if pending:
                await self._io(f"write {what}", f.write, bytes(pending))
            verifier.finish()
            await self._io(f"store {what}", self._commit, f, temp, final)
            committed = True
        finally:
            if not committed:
                # Never leave a partial or unverified object behind, whatever interrupted us.
                # Synchronous on purpose: an await here could be cancelled again.
                self._discard(f, temp)

    async def put_stream(self, hash: str, size: int, chunks: AsyncIterable[bytes]) -> None:
        verifier = StreamVerifier(hash, size)
        await self._write_verified(verifier, self.path_for(hash), chunks, f"blob {hash}")

    async def put_upload_stream(
        self, upload_id: str, hash: str, size: int, chunks: AsyncIterable[bytes]
    ) -> None:
        """Stage the body of a PUT to ``upload_id``'s URL (the server's upload route).

        Hashes while writing, like :meth:`put_stream`: bytes that are not ``size`` bytes of
        ``hash`` raise :class:`BlobVerifyFailed` and stage nothing, so the client learns at
        once. A good body becomes the staged object atomically (replacing an earlier PUT
        to the same URL); :meth:`commit_upload` verifies it again before it becomes a blob.
        """
        verifier = StreamVerifier(hash, size)
        staged = self.staging_path_for(upload_id)
        await self._write_verified(verifier, staged, chunks, f"upload {upload_id}")

    async def put(self, hash: str, data: bytes) -> None:
        await self.put_stream(hash, len(data), one_chunk(data))

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _stat_size(path: Path) -> int | None:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return None

    async def stat(self, hash: str) -> int | None:
        return await self._io(f"stat blob {hash}", self._stat_size, self.path_for(hash))

    @staticmethod
    def _open_read(path: Path) -> BinaryIO | None:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            return None

    async def read_stream(self, hash: str, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        path = self.path_for(hash)
        f = await self._io(f"open blob {hash}", self._open_read, path)
        if f is None:
            raise BlobMissing(f"blob {hash} is not stored in {self.root}")
        try:
            while True:
                chunk = await self._io(f"read blob {hash}", f.read, max(1, chunk_size))
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    async def read(self, hash: str) -> bytes:
        path = self.path_for(hash)
        f = await self._io(f"open blob {hash}", self._open_read, path)
        if f is None:
            raise BlobMissing(f"blob {hash} is not stored in {self.root}")
        with f:
            return await self._io(f"read blob {hash}", f.read)

    def _hash_file(self, path: Path) -> tuple[int, str, int] | None:
        """(size, hex digest, inode) of the file, or None when it is missing."""
        f = self._open_read(path)
        if f is None:
            return None
        with f:
            digest = hashlib.sha256()
            total = 0
            while block := f.read(_READ_SIZE):
                digest.update(block)
                total += len(block)
            return total, digest.hexdigest(), os.fstat(f.fileno()).st_ino

    @staticmethod
    def _unlink_if_same(path: Path, inode: int) -> None:
        # A concurrent put may have renamed a good copy into place since we hashed; keep it.
        try:
            if path.stat().st_ino == inode:
                path.unlink()
        except FileNotFoundError:
            pass

    async def verify(self, hash: str, size: int) -> None:
        check_size(size)
        path = self.path_for(hash)
        found = await self._io(f"read blob {hash}", self._hash_file, path)
        if found is None:
            raise BlobMissing(f"blob {hash} is not stored in {self.root}")
        actual_size, actual_hex, inode = found
        error = scrub_verdict(hash, size, actual_size, HASH_PREFIX + actual_hex)
        if error is None:
            return
        if error.reason == "verify-failed":
            await self._io(f"delete bad blob {hash}", self._unlink_if_same, path, inode)
        raise error

    # -- staged uploads --------------------------------------------------------------------

    def _take_staged(self, upload_id: str) -> str | None:
        """Move the staged file to a private name in ``.tmp``; None when nothing is staged.

        After the rename, a PUT still in flight to the same URL can only create a new
        staged file: the bytes being verified can no longer change under us.
        """
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, private = tempfile.mkstemp(dir=self._tmp, prefix=f"{upload_id}.", suffix=".commit")
        os.close(fd)
        try:
            os.replace(self.staging_path_for(upload_id), private)
        except FileNotFoundError:
            os.unlink(private)
            return None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(private)
            raise
        return private

    def _commit_staged(self, upload_id: str, hash: str, size: int) -> None:
        private = self._take_staged(upload_id)
        if private is None:
            raise BlobMissing(f"nothing is staged under upload {upload_id} in {self.root}")
        placed = False
        try:
            found = self._hash_file(Path(private))
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "the staged file vanished", private)
            actual_size, actual_hex, _ = found
            error = staged_verdict(upload_id, hash, size, actual_size, HASH_PREFIX + actual_hex)
            if error is not None:
                raise error
            final = self.path_for(hash)
            if self._stat_size(final) is not None:
                return  # already stored: same bytes; the private copy goes below
            # The staged file was fsynced when put_upload_stream wrote it.
            final.parent.mkdir(parents=True, exist_ok=True)
            # Verified bytes of ``hash``: should a concurrent put have placed the object
            # since the check above, this replaces it with identical bytes.
            os.replace(private, final)
            placed = True
            self._sync_dir(final.parent)
        finally:
            if not placed:
                with contextlib.suppress(OSError):
                    os.unlink(private)

    async def commit_upload(self, upload_id: str, hash: str, size: int) -> None:
        check_upload_id(upload_id)
        hash_hex(hash)
        check_size(size)
        await self._io(f"commit upload {upload_id}", self._commit_staged, upload_id, hash, size)

    async def discard_upload(self, upload_id: str) -> bool:
        staged = self.staging_path_for(upload_id)
        return await self._io(f"discard upload {upload_id}", self._unlink, staged)

    # -- delete and list -------------------------------------------------------------------

    @staticmethod
    def _unlink(path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def delete(self, hash: str) -> bool:
        return await self._io(f"delete blob {hash}", self._unlink, self.path_for(hash))

    def _top_dirs(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(Path(e.path) for e in entries if _HEX2.fullmatch(e.name) and e.is_dir())

    @staticmethod
    def _hashes_under(top: Path) -> list[str]:
        found: list[str] = []
        for sub in sorted(os.scandir(top), key=lambda e: e.name):
            if not (_HEX2.fullmatch(sub.name) and sub.is_dir()):
                continue
            prefix = top.name + sub.name
            for entry in os.scandir(sub.path):
                if (
                    _HEX64.fullmatch(entry.name)
                    and entry.name.startswith(prefix)
                    and entry.is_file()
                ):
                    found.append(HASH_PREFIX + entry.name)
        return found

    async def list_hashes(self) -> AsyncIterator[str]:
        for top in await self._io("list the directory", self._top_dirs):
            for h in await self._io(f"list {top}", self._hashes_under, top):
                yield h

    # -- URL grants ------------------------------------------------------------------------

    def set_public_base_url(self, url: str) -> None:
        """Where clients reach this node's ``/v1/blobs`` routes (known once it listens)."""
        self._public_base_url = url.rstrip("/")

    def can_grant_urls(self) -> bool:
        return self._signer is not None and bool(self._public_base_url)

    def upload_url(
        self, hash: str, size: int, *, upload_id: str, now_ms: int, ttl_s: int
    ) -> UrlGrant | None:
        """A signed ``/v1/uploads/{upload_id}`` PUT grant (hash and size inside the MAC)."""
        if self._signer is None or not self._public_base_url:
            return None
        return self._signer.grant_upload(
            self._public_base_url, upload_id, hash, size, now_ms=now_ms, ttl_s=ttl_s
        )

    def download_url(self, hash: str, *, now_ms: int, ttl_s: int) -> UrlGrant | None:
        """A GET grant carrying the stored size; raises :class:`BlobMissing` when not stored.

        Reads the file's size with one ``stat`` on the calling thread (a metadata lookup).
        """
        if self._signer is None or not self._public_base_url:
            return None
        try:
            size = self._stat_size(self.path_for(hash))
        except OSError as exc:
            raise self._error(exc, f"stat blob {hash}") from exc
        if size is None:
            raise BlobMissing(f"blob {hash} is not stored in {self.root}")
        return self._signer.grant(
            "GET", self._public_base_url, hash, size, now_ms=now_ms, ttl_s=ttl_s
        )

"""Blob Storage: the client factory and the few blob operations scorer needs.

``connect`` is the one place a storage client is built, from the settings: a
connection string (Azurite, development) or an account URL with
DefaultAzureCredential (Azure: the managed identity). Tests pass the real Azurite
endpoint through the same settings; nothing is patched.

Outputs are written through ``StagedBlob``: blocks are staged while scoring runs
and become visible only when the block list is committed, all at once (an output
smaller than a block is one Put Blob, as whole). A reader never sees a partial output,
and an abandoned output leaves nothing visible.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, BlobServiceClient, ContentSettings, ExponentialRetry
from requests import Session
from requests.utils import get_environ_proxies

from scorer.errors import BlobError, ConfigError, StorageError
from scorer.log import keep_secret
from scorer.settings import Settings

log = logging.getLogger("scorer.storage")

STORAGE_SCOPE = "https://storage.azure.com/.default"
BLOCK_SIZE = 4 * 1024 * 1024
#: Blob Storage's limit of blocks in one block blob
MAX_BLOCKS = 50_000
#: Downloads come in pieces of this size, the first one included (the SDK's
#: default first GET is 32 MiB, which would hold back the first batch).
GET_SIZE = 4 * 1024 * 1024

#: exceptions that mean "storage is unreachable or refused us", as opposed to a
#: specific blob's state (404, 409, 412), which callers handle themselves
TRANSPORT_ERRORS = (ServiceRequestError, ServiceResponseError, ClientAuthenticationError)

#: Blob Storage's limit on a blob's name, counted in UTF-16 code units (an emoji
#: counts two); a longer name gets 400 OutOfRangeInput. Azurite does not enforce it.
MAX_BLOB_NAME = 1024


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage service (or our access to it) failed, as
    opposed to one blob's request being refused.

    Outages: no connection, timeouts, 5xx, 408 and 429 (retries exhausted), and 403
    (the identity lacks its role on the account: every blob would fail alike).
    Anything else with a 4xx status (too many tags, a name too long, a condition
    not met) is about that one blob, and must not stop the others.
    """
    if isinstance(exc, (StorageError, *TRANSPORT_ERRORS)):
        return True
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        return status is None or status >= 500 or status in (403, 408, 429)
    return False


#: what Blob Storage answers when a conditional write finds the blob changed (412) or,
#: for one that had to be absent, there (409 BlobAlreadyExists)
FENCE_ERRORS = (ResourceModifiedError, ResourceExistsError)


def as_seen(props: Any | None) -> dict:
    """Conditions that make a write happen only if the blob is still as ``props`` saw it
    (that ETag), or still absent (``props`` is None). A job that was paused or cut off
    past its lease cannot then write over what another run wrote meanwhile: the write
    fails with one of FENCE_ERRORS instead."""
    if props is None:
        return {"match_condition": MatchConditions.IfMissing}
    # a listing's ETags come without the quotes a property read's have: quoted here alike
    return {"etag": f'"{etag_of(props)}"', "match_condition": MatchConditions.IfNotModified}


def name_length(name: str) -> int:
    """A blob name's length as Blob Storage counts it (UTF-16 code units)."""
    return len(name.encode("utf-16-le")) // 2

# Bounded: about 30 s of back-off over 5 retries, so an outage ends the run with
# its inputs intact instead of hanging a container that bills by the second.
_RETRY = dict(initial_backoff=0.5, increment_base=2, retry_total=5, random_jitter_range=1)


def connect(settings: Settings) -> BlobServiceClient:
    """Build the Blob service client the settings describe.

    With an account URL, waits up to SCORER_CREDENTIAL_TIMEOUT seconds for the
    first token: a new ACI container group's identity endpoint is not ready at once.
    Raises StorageError when no token can be had in that time.
    """
    keep_secret(*settings.secret_values())
    common = dict(retry_policy=ExponentialRetry(**_RETRY), connection_timeout=10, read_timeout=120,
                  max_single_get_size=GET_SIZE, max_chunk_get_size=GET_SIZE)
    if settings.connection_string:
        try:
            client = BlobServiceClient.from_connection_string(settings.connection_string, **common)
            return BlobServiceClient.from_connection_string(settings.connection_string, **common,
                                                            session=_session(client.url))
        except ValueError as exc:
            raise ConfigError(
                f"AZURE_STORAGE_CONNECTION_STRING is malformed: {exc}",
                hint="Copy the connection string again from the portal or Azurite's docs.",
                setting="AZURE_STORAGE_CONNECTION_STRING",
            ) from None
    from azure.identity import DefaultAzureCredential

    credential = wait_for_token(lambda: DefaultAzureCredential(exclude_interactive_browser_credential=True),
                                settings.credential_timeout)
    return BlobServiceClient(settings.account_url, credential=credential, **common,
                             session=_session(settings.account_url))


def _session(url: str) -> Session:
    """The HTTP session of every request: the environment's proxy and CA bundle read once,
    here, rather than on every request (requests reads the environment and looks for a
    .netrc file each time, a tenth of a small request's CPU: with a thousand small inputs
    the job is bound by the CPU its requests take; docs/performance.md)."""
    session = Session()
    session.trust_env = False
    session.proxies = get_environ_proxies(url)  # HTTPS_PROXY and NO_PROXY, as requests reads them
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    return session


def wait_for_token(make_credential: Callable[[], Any], timeout: float, *, sleep=time.sleep,
                   clock=time.monotonic) -> Any:
    """Retry the first token until ``timeout`` seconds have passed; return the
    credential that got it.

    Each attempt uses a new credential: a managed-identity credential whose first
    request failed can keep failing without asking the endpoint again (seen with
    azure-identity 1.27), and ACI's endpoint is often not ready at container start.
    Raises StorageError with the last error when no token came.
    """
    deadline = clock() + timeout
    delay, last = 1.0, None
    while True:
        credential = make_credential()
        try:
            credential.get_token(STORAGE_SCOPE)
            return credential
        except Exception as exc:  # every credential failure looks different; all are retried
            last = exc
        if clock() + delay > deadline:
            break
        log.info("identity endpoint not ready; retrying", extra={"event": "token_retry", "delay_s": delay})
        sleep(delay)
        delay = min(delay * 2, 10.0)
    raise StorageError(
        f"No token for Blob Storage within {timeout:.0f} s: {str(last).splitlines()[0] if last else 'no answer'}",
        hint="Check the container's managed identity (AZURE_CLIENT_ID for a user-assigned one) "
        "and its Storage Blob Data Contributor role; raise SCORER_CREDENTIAL_TIMEOUT if the "
        "identity endpoint is slow to start.",
        setting="SCORER_CREDENTIAL_TIMEOUT",
    )


class Store:
    """scorer's view of the storage account: its containers and blob operations."""

    def __init__(self, service: BlobServiceClient, settings: Settings):
        self.service = service
        self.settings = settings
        # reads sent ahead and blocks staged: a few for each input in flight (scorer.batch.flight)
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * settings.inputs_in_flight),
                                        thread_name_prefix="blob-io")

    def blob(self, container: str, name: str) -> BlobClient:
        return self.service.get_blob_client(container, name)

    def ensure_containers(self, *extra: str) -> None:
        """Create scorer's containers, and ``extra`` ones, where missing (in Azure
        the template made them). This is on the start-up path of every run, so the
        account's containers are listed first (one request; six creations side by
        side took about 20 ms) and only the missing ones are created, side by side on
        the I/O threads. An identity that may not list the account's containers (a
        role given on the containers alone) tries to create each, as before."""
        wanted = [*self.settings.containers, *extra]
        try:
            have = {c.name for c in self.service.list_containers()}
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            have = set()
        for done in [self._pool.submit(self._ensure_container, name) for name in wanted if name not in have]:
            done.result()

    def _ensure_container(self, name: str) -> None:
        try:
            self.service.create_container(name)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 403:  # a role without create rights is fine if they exist
                raise

    def list_names(self, container: str, prefix: str | None = None, tags: bool = False) -> list[Any]:
        """Blob properties under a prefix, in name order (with ``tags``, each blob's index
        tags too, in the same request); none when the container does not exist yet (a
        fresh account)."""
        try:
            return list(self.service.get_container_client(container).list_blobs(
                name_starts_with=prefix, include=["tags"] if tags else None))
        except ResourceNotFoundError:
            return []

    def iter_names(self, container: str, prefix: str | None = None, tags: bool = False,
                   metadata: bool = False) -> Iterator[Any]:
        """As ``list_names``, read a page (5,000 blobs) at a time as the caller goes (with
        ``metadata``, each blob's metadata too)."""
        include = (["tags"] if tags else []) + (["metadata"] if metadata else [])
        try:
            yield from self.service.get_container_client(container).list_blobs(
                name_starts_with=prefix, include=include or None)
        except ResourceNotFoundError:
            return

    def properties(self, container: str, name: str) -> Any | None:
        try:
            return self.blob(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return None

    def download_to(self, container: str, name: str, path: Path, etag: str | None = None) -> Any:
        """Download a blob (with ``etag``: only that version of it, else 412) into a local
        file; returns its properties."""
        downloader = self.blob(container, name).download_blob(max_concurrency=2, **_version(etag))
        with open(path, "wb") as f:
            downloader.readinto(f)
        return downloader.properties

    def read_bytes(self, container: str, name: str, etag: str | None = None) -> bytes:
        """A blob's content (with ``etag``: only that version of it, else 412)."""
        return self.blob(container, name).download_blob(max_concurrency=2, **_version(etag)).readall()

    def put_bytes(self, container: str, name: str, data: bytes, *, overwrite: bool = True,
                  content_type: str = "application/octet-stream", metadata: dict | None = None,
                  lease: Any = None, conditions: dict | None = None) -> None:
        """Write a blob whole (``conditions``: see ``as_seen``)."""
        self.blob(container, name).upload_blob(
            data, overwrite=overwrite, metadata=metadata, lease=lease,
            content_settings=ContentSettings(content_type=content_type), **(conditions or {}))

    def put_json(self, container: str, name: str, obj: Any, *, overwrite: bool = True,
                 conditions: dict | None = None) -> None:
        self.put_bytes(container, name, (json.dumps(obj, indent=2, default=str) + "\n").encode(),
                       overwrite=overwrite, content_type="application/json", conditions=conditions)

    def get_json_seen(self, container: str, name: str) -> tuple[Any, Any]:
        """A JSON blob and its properties (for a write fenced on them: ``as_seen``), or
        (None, None) when there is none."""
        try:
            got = self.blob(container, name).download_blob(max_concurrency=1)
        except ResourceNotFoundError:
            return None, None
        return json.loads(got.readall()), got.properties

    def get_json(self, container: str, name: str) -> Any:
        return json.loads(self.read_bytes(container, name))

    def open_read(self, container: str, name: str, offset: int | None = None, length: int | None = None,
                  prefix: bytes = b"", etag: str | None = None) -> "BlobReader":
        """A blob (or ``length`` bytes of it from ``offset``) as a stream that downloads
        ahead of its reader, after ``prefix`` (a CSV part gets its file's header line).
        With ``etag``, only that version is read: a blob replaced meanwhile fails the
        read (412) rather than mix two files (issue 26)."""
        return BlobReader(self.blob(container, name), offset=offset, length=length, prefix=prefix, etag=etag)

    def read_range(self, container: str, name: str, offset: int, length: int, etag: str | None = None) -> bytes:
        return self.blob(container, name).download_blob(offset=offset, length=length, **_version(etag)).readall()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on the store's I/O threads, so that a download
        overlaps R's work on the main thread."""
        return self._pool.submit(fn, *args)

    def staged(self, container: str, name: str, prefix: str | None = None,
               max_blocks: int = MAX_BLOCKS) -> "StagedBlob":
        """A blob written as staged blocks, visible only once committed. ``prefix`` (16
        characters) names its blocks, for a part of an input whose blocks another job
        commits (scorer.batch.split), with ``max_blocks``, its share of the blob's blocks."""
        return StagedBlob(self.blob(container, name), self._pool, prefix=prefix, max_blocks=max_blocks)

    def copy(self, src_container: str, src_name: str, dst_container: str, dst_name: str,
             metadata: dict | None = None, timeout: float = 300, source_etag: str | None = None,
             new: bool = False) -> None:
        """Server-side copy within the account; returns when the copy has succeeded.
        With ``source_etag``, only of that version of the source (else 412); with ``new``,
        only onto no blob (else 409 BlobAlreadyExists).

        Raises StorageError if the copy fails or does not finish within ``timeout``.
        """
        src = self.blob(src_container, src_name)
        dst = self.blob(dst_container, dst_name)
        only = {} if source_etag is None else {"source_etag": f'"{source_etag.strip(chr(34))}"',
                                                "source_match_condition": MatchConditions.IfNotModified}
        if new:
            only["match_condition"] = MatchConditions.IfMissing
        # Within one account a copy usually completes in the request itself, and its
        # answer says so: the destination is read back only while it is pending.
        status, why = dst.start_copy_from_url(src.url, metadata=metadata, **only).get("copy_status"), None
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if status in (None, "success"):
                return
            if status != "pending":
                raise StorageError(f"copying {src_container}/{src_name} to {dst_container}/{dst_name} "
                                   f"ended with status {status}: {why or 'no description given'}")
            if time.monotonic() > deadline:
                raise StorageError(f"copying {src_container}/{src_name} to {dst_container}/{dst_name} "
                                   f"did not finish within {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            copy = dst.get_blob_properties().copy
            status, why = copy.status, copy.status_description

    def delete(self, container: str, name: str, lease: Any = None, **conditions: Any) -> None:
        """Delete a blob, if it is there (``conditions``: see ``as_seen``)."""
        try:
            self.blob(container, name).delete_blob(lease=lease, **conditions)
        except ResourceNotFoundError:
            pass

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _version(etag: str | None) -> dict:
    """Conditions that make a read fail (412) unless the blob is still this version."""
    if etag is None:
        return {}
    return {"etag": f'"{etag.strip(chr(34))}"', "match_condition": MatchConditions.IfNotModified}


class BlobReader(io.RawIOBase):
    """A read-only stream over a blob, downloaded piece by piece on a thread of
    its own, at most ``ahead`` pieces ahead of the reader. Parsing starts with
    the first piece instead of after the whole file, and memory stays bounded.

    A download error is raised to the reader as StorageError (never as OSError,
    which the CSV reader would take for a malformed file), but for the blob gone (404)
    or, read by ``etag``, replaced (412), which are raised as they are. ``seconds`` is how
    long the download took, once it is complete.
    """

    _END = object()

    def __init__(self, client: BlobClient, ahead: int = 3, offset: int | None = None, length: int | None = None,
                 prefix: bytes = b"", etag: str | None = None):
        super().__init__()
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._piece = memoryview(prefix)
        self._ended = False
        self.seconds: float | None = None
        self._range = (offset, length)
        self._version = _version(etag)
        self._thread = threading.Thread(target=self._pump, args=(client,), daemon=True,
                                        name=f"download:{client.blob_name}")
        self._thread.start()

    def _pump(self, client: BlobClient) -> None:
        t = time.monotonic()
        offset, length = self._range
        try:
            for piece in client.download_blob(offset=offset, length=length, **self._version).chunks():
                if not self._put(piece):
                    return
            self.seconds = time.monotonic() - t
            self._put(self._END)
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(exc)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._stop.is_set():
            raise ValueError("read from a closed blob stream")
        while not self._piece:
            if self._ended:
                return 0
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():  # closed while waiting: the download will put nothing more
                    raise ValueError("read from a closed blob stream") from None
                continue
            if item is self._END:
                self._ended = True
                return 0
            if isinstance(item, BaseException):
                self._ended = True
                if isinstance(item, (MemoryError, ResourceNotFoundError, ResourceModifiedError)):
                    raise item  # the job's memory (see scorer/batch/job.py); the blob gone or replaced: not an outage
                first_line = str(item).splitlines()[0] if str(item) else type(item).__name__
                raise StorageError(f"downloading the input failed: {first_line}") from item
            self._piece = memoryview(item)
        n = min(len(b), len(self._piece))
        b[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n

    def close(self) -> None:
        """Stop the download (when reading ended early) and release its pieces."""
        self._stop.set()
        self._piece = memoryview(b"")
        super().close()


class StagedBlob(io.RawIOBase):
    """A write-only stream that stages blocks of a blob as it fills, and commits
    them all at once in ``commit``. Uploads run on a small thread pool so they
    overlap with scoring; at most ``max_inflight`` blocks are held in memory.

    A blob holds at most 50,000 blocks, so the block size doubles each time a fifth of
    ``max_blocks`` (this writer's share of them) is used: 4 MiB blocks hold the first
    39 GiB of a whole output, and the largest, 64 MiB, are reached only past 273 GiB
    (``max_blocks`` × 24.8 MiB in all, 1.2 TiB for a whole blob). Past its share the
    writer refuses, naming the limit, before anything is committed."""

    def __init__(self, client: BlobClient, pool: ThreadPoolExecutor, block_size: int = BLOCK_SIZE,
                 max_inflight: int = 3, prefix: str | None = None, max_blocks: int = MAX_BLOCKS):
        super().__init__()
        self._client = client
        self._pool = pool
        self._base_size = self._block_size = block_size
        self._max_blocks = max_blocks
        self._max_inflight = max_inflight
        self._buf = bytearray()
        self._ids: list[str] = []
        self._inflight: deque[Future] = deque()
        # every block ID of a blob must have the same length: 16 characters, a dash, 8 digits
        self._prefix = prefix or uuid.uuid4().hex[:16]
        if len(self._prefix) != 16:
            raise ValueError("a block prefix is 16 characters")
        self._written = 0
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, b: Any) -> int:
        # released at once: a view left alive when a MemoryError unwinds makes the
        # caller's buffer fail to free ("deallocated bytearray object has exported buffers")
        with memoryview(b) as view, view.cast("B") as data:
            n = len(data)
            self._buf += data
        self._written += n
        while len(self._buf) >= (size := self._block_size):
            block = bytes(self._buf[:size])
            del self._buf[:size]
            self._stage(block)
        return n

    def _stage(self, data: bytes) -> None:
        if len(self._ids) >= self._max_blocks:
            shared = " (shared equally among the parts of a split input)" if self._max_blocks < MAX_BLOCKS else ""
            raise BlobError(
                f"{self._client.blob_name}: the output needs more than {self._max_blocks:,} blocks "
                f"({self._written / 1024**3:,.1f} GiB written so far); Blob Storage allows "
                f"{MAX_BLOCKS:,} blocks per blob{shared}",
                hint="Drop the input as several smaller files (each is scored to an output of its own).")
        block_id = base64.b64encode(f"{self._prefix}-{len(self._ids):08d}".encode()).decode()
        self._ids.append(block_id)
        self._block_size = self._base_size << min(4, len(self._ids) * 5 // max(self._max_blocks, 5))
        self._inflight.append(self._pool.submit(self._client.stage_block, block_id, data))
        while len(self._inflight) >= self._max_inflight:
            self._inflight.popleft().result()

    def flush_blocks(self) -> list[str]:
        """Stage what is left and wait for every block, without committing: the block
        IDs, in order, for whoever commits them (scorer.batch.split)."""
        if self._buf:
            self._stage(bytes(self._buf))
            self._buf.clear()
        while self._inflight:
            self._inflight.popleft().result()
        return list(self._ids)

    def commit(self, *, metadata: dict | None = None, content_type: str | None = None,
               blocks: list[str] | None = None, conditions: dict | None = None) -> int:
        """Stage what is left and commit the block list: the blob appears whole.
        ``blocks``: commit these block IDs (staged by this and other writers) instead;
        ``conditions``: commit only if the blob is as it was seen (``as_seen``), else
        raise one of FENCE_ERRORS. Returns the number of bytes this writer wrote."""
        settings = ContentSettings(content_type=content_type) if content_type else None
        if not self._ids and blocks is None:  # less than a block: one Put Blob, as whole as a commit
            try:
                self._client.upload_blob(bytes(self._buf), overwrite=True, metadata=metadata,
                                         content_settings=settings, **(conditions or {}))
                self._buf.clear()
                return self._written
            except ResourceExistsError:
                # "to be absent", refused: Azurite counts a name with only uncommitted blocks (a split
                # input's parts staged there) as a blob. The block list, below, gives the fence's answer
                pass
        if self._buf:
            self._stage(bytes(self._buf))
            self._buf.clear()
        while self._inflight:
            self._inflight.popleft().result()
        self._client.commit_block_list(blocks if blocks is not None else self._ids, metadata=metadata,
                                       content_settings=settings, **(conditions or {}))
        return self._written

    def abandon(self) -> None:
        """Drop the staged blocks: nothing was committed, so nothing is visible.
        (Blob Storage discards uncommitted blocks after a week.)"""
        for f in self._inflight:
            f.cancel()
        self._inflight.clear()
        self._buf.clear()

    def close(self) -> None:
        # Closing (pyarrow closes its sinks) must not commit: only commit() does.
        super().close()


def etag_of(props: Any) -> str:
    """The blob's ETag without quotes: listings and property reads differ in quoting."""
    return (props.etag or "").strip('"')

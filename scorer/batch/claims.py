"""Claiming inputs: a blob lease, renewed in the background while the input is worked on.

Two jobs started together (the schedule and a blob event overlap, or N parallel
container groups) never score the same input: only the holder of the lease may
delete the input, and a job that finds an input leased skips it. A job that dies
stops renewing, so its claims lapse within SCORER_LEASE_SECONDS and the next run
takes the input over.

The number of times scoring of an input was started is kept in a blob index tag
(``scorer-attempts``): tags do not change the blob's ETag, which identifies the
input's content, and an input whose attempts reach SCORER_MAX_ATTEMPTS without
finishing is quarantined as poison rather than crashing every run. The same tag
records how each unfinished attempt ended, when the job could still say so:
``"3 1=no-space 3=stopped"`` is three starts, the first out of disk space, the
third stopped by a signal, and the second with no record (the job was killed or
crashed: SIGKILL, the kernel's out-of-memory killer). One tag, because Blob
Storage allows ten per blob and the user's own come first; tag values may hold
letters, digits, space and ``+-./:=_``, which the codes keep to.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient

from scorer.errors import OutOfDisk, OutOfMemory, PoisonInput

log = logging.getLogger("scorer.claims")

ATTEMPTS_TAG = "scorer-attempts"

#: what each recorded outcome means, for a poison note
OUTCOMES = {
    "no-space": "ran out of disk space (no space left on device)",
    "out-of-memory": "ran out of memory",
    "stopped": "was stopped by SIGTERM or SIGINT before it finished (jobTimeout, a shutdown, Ctrl-C)",
    "storage": "lost Blob Storage before it finished",
    "internal": "failed with an internal error (see that run's report)",
    "lease-lost": "lost its claim (lease) on the input",
}
NO_RECORD = ("ended with no record: the job was killed or crashed (SIGKILL, the out-of-memory killer, "
             "a container deleted at jobTimeout)")


#: error codes Blob Storage gives when a request's lease is not (or no longer) the blob's
_LEASE_CODES = {"LeaseLost", "LeaseIdMismatchWithBlobOperation", "LeaseIdMismatchWithLeaseOperation",
                "LeaseNotPresentWithBlobOperation", "LeaseNotPresentWithLeaseOperation", "LeaseIdMissing",
                "LeaseExpired"}


def is_lease_error(exc: BaseException) -> bool:
    """Whether a storage error says our lease is gone: the claim, not the input, failed."""
    if not isinstance(exc, HttpResponseError):
        return False
    return exc.error_code in _LEASE_CODES or (exc.status_code in (409, 412) and "lease" in str(exc).lower())


class LeaseLost(Exception):
    """The claim on an input was lost and could not be taken again (scorer.batch.job leaves
    the input pending)."""


@dataclass
class Attempts:
    """The attempt record kept in the ``scorer-attempts`` tag."""

    number: int = 0
    outcomes: dict[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Attempts":
        """Read a tag value; anything unreadable counts as no attempts so far."""
        parts = text.split()
        if not parts or not parts[0].isdigit():
            return cls()
        outcomes = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            if k.isdigit() and v:
                outcomes[int(k)] = v
        return cls(int(parts[0]), outcomes)

    @property
    def unrecorded(self) -> int:
        """Attempts that ended with no record of how (the job was killed or crashed)."""
        return sum(1 for i in range(1, self.number + 1) if i not in self.outcomes)

    def format(self) -> str:
        return " ".join([str(self.number)] + [f"{k}={v}" for k, v in sorted(self.outcomes.items())])

    def history(self, upto: int) -> list[str]:
        """How attempts 1..upto ended, in words."""
        return [f"attempt {i} {OUTCOMES.get(self.outcomes[i], self.outcomes[i]) if i in self.outcomes else NO_RECORD}"
                for i in range(1, upto + 1)]


class Claim:
    """A held lease on one input blob. Use ``Claim.take``; release with ``release``."""

    def __init__(self, blob: BlobClient, lease: BlobLeaseClient, seconds: int):
        self.blob = blob
        self.lease = lease
        self.seconds = seconds
        self.lost = False
        self.deleted = False
        self._tags: dict[str, str] = {}
        self._record: Attempts | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease:{blob.blob_name}", daemon=True)
        self._thread.start()

    @classmethod
    def take(cls, blob: BlobClient, seconds: int) -> "Claim | None":
        """Lease the blob, or return None when another job holds it or it is gone."""
        try:
            lease = blob.acquire_lease(lease_duration=seconds)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent: another job is on it
                return None
            raise
        return cls(blob, lease, seconds)

    def _renew(self) -> None:
        # Renew at a third of the lease so that two failed renewals still leave time.
        interval = self.seconds / 3
        while not self._stop.wait(interval):
            try:
                self.lease.renew()
            except ResourceNotFoundError:
                return  # the input was archived or quarantined: nothing left to hold
            except Exception as exc:  # storage hiccup: keep trying until the lease is gone
                log.warning("lease renewal failed", extra={"event": "lease_renew_failed",
                                                          "blob": self.blob.blob_name, "error": str(exc)})
                if isinstance(exc, HttpResponseError) and exc.status_code in (409, 412):
                    self.lost = True
                    return

    def start_attempt(self, limit: int) -> "Attempts":
        """Count one more start of scoring this input, unless that would pass
        ``limit``; return the record, with this start's number, either way. One
        read and one write of the blob's tags, which other tags keep.

        Raises LeaseLost when the input is gone or the lease is no longer ours (a
        storage stall or a pause outlasted it: the input is not at fault, issue 26);
        HttpResponseError as Blob Storage does otherwise: 400 TagsTooLarge when the
        blob already carries ten tags (the caller quarantines it, see scorer.batch.job).
        """
        try:
            tags = self.blob.get_blob_tags()
            record = Attempts.parse(tags.get(ATTEMPTS_TAG, ""))
            record.number += 1
            if record.number <= limit:
                tags[ATTEMPTS_TAG] = record.format()
                self.blob.set_blob_tags(tags, lease=self.lease)
        except HttpResponseError as exc:
            self._lost_if_ours(exc)
            raise
        self._tags = tags
        self._record = record
        return record

    def confirm(self) -> None:
        """Renew the lease now, before a write only its holder may make (a quarantine
        note): a job paused or cut off past its lease stops here rather than write over
        another run's work. Raises LeaseLost when the lease is no longer ours."""
        if self.lost:
            raise LeaseLost(f"{self.blob.blob_name}: the lease was lost while this job worked on the input")
        try:
            self.lease.renew()
        except HttpResponseError as exc:
            self._lost_if_ours(exc)
            raise

    def _lost_if_ours(self, exc: HttpResponseError) -> None:
        """Raise LeaseLost when ``exc`` says the input is gone or the lease is not ours."""
        if isinstance(exc, ResourceNotFoundError):
            self.lost = True
            raise LeaseLost(f"{self.blob.blob_name}: the input is gone (another job finished it)") from None
        if is_lease_error(exc):
            self.lost = True
            raise LeaseLost(f"{self.blob.blob_name}: the lease lapsed and is not this job's any more "
                            f"({str(exc).splitlines()[0]})") from None

    def end_attempt(self, code: str) -> None:
        """Record how this attempt ended without finishing (``no-space``,
        ``stopped``, ...). Best effort: when storage is down it cannot be written,
        and the next run reads "no record"."""
        record = self._record
        if record is None or self.lost:
            return
        record.outcomes[record.number] = code
        self._tags[ATTEMPTS_TAG] = record.format()
        try:
            self.blob.set_blob_tags(self._tags, lease=self.lease)
        except Exception as exc:  # storage outage or a lapsed lease: the record stays as it was
            log.warning("could not record how the attempt ended", extra={
                "event": "attempt_record_failed", "blob": self.blob.blob_name, "error": str(exc).splitlines()[0]})

    def delete_input(self, etag: str) -> None:
        """Delete the claimed input, under the lease. When the lease lapsed (an
        outage outlasted it), take it again and delete, provided no other job
        took it meanwhile and the input is still the one scored (same ETag).

        Raises LeaseLost when that cannot be done: the input then stays pending,
        and the next run archives it without scoring it again.
        """
        try:
            self.blob.delete_blob(lease=self.lease)
        except ResourceNotFoundError:
            pass
        except HttpResponseError as exc:
            if not is_lease_error(exc):
                raise
            self._retake(etag)
            self.blob.delete_blob(lease=self.lease)
        self.deleted = True  # the lease went with the blob

    def _retake(self, etag: str) -> None:
        try:
            lease = self.blob.acquire_lease(lease_duration=self.seconds)
        except (ResourceNotFoundError, HttpResponseError) as exc:
            if isinstance(exc, ResourceNotFoundError) or exc.status_code == 409:
                raise LeaseLost(f"{self.blob.blob_name}: the lease lapsed and another job has the input now") from None
            raise
        if (self.blob.get_blob_properties().etag or "").strip('"') != etag:
            lease.release()
            raise LeaseLost(f"{self.blob.blob_name}: the lease lapsed and the input was replaced meanwhile")
        log.info("lease taken again after it lapsed", extra={"event": "lease_retaken", "blob": self.blob.blob_name})
        self.lease = lease
        self.lost = False

    def release(self) -> None:
        """Stop renewing and give the lease back if the blob still exists."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.deleted:
            return
        try:
            self.lease.release()
        except Exception:  # the blob is gone (archived) or the lease lapsed: nothing to give back
            pass


def poison(name: str, record: Attempts) -> PoisonInput:
    started = record.number - 1
    history = record.history(started)
    codes = set(record.outcomes.values())
    if "no-space" in codes:
        hint = OutOfDisk.hint.split(";")[0] + ", then drop it again."
    elif "out-of-memory" in codes:
        hint = OutOfMemory.hint.split(";")[0] + ", then drop it again."
    elif "stopped" in codes:
        hint = "Give the job more time (jobTimeout) or split the file, then drop it again."
    else:
        hint = ("Check the job's logs for those runs; split the file or give the container more memory "
                "(memoryInGB) or time (jobTimeout), then drop it again.")
    return PoisonInput(f"{name}: scoring this input was started {started} times and never finished: "
                       + "; ".join(history) + ".", hint=hint, attempts=history)

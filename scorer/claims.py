"""Claiming inputs: a blob lease, renewed in the background while the input is worked on.

Two jobs started together (the schedule and a blob event overlap, or N parallel
container groups) never score the same input: only the holder of the lease may
delete the input, and a job that finds an input leased skips it. A job that dies
stops renewing, so its claims lapse within SCORER_LEASE_SECONDS and the next run
takes the input over.

The number of times scoring of an input was started is kept in a blob index tag
(``scorer-attempts``): tags do not change the blob's ETag, which identifies the
input's content, and an input whose attempts reach SCORER_MAX_ATTEMPTS without
finishing is quarantined as poison rather than crashing every run.
"""

from __future__ import annotations

import logging
import threading

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient

log = logging.getLogger("scorer.claims")

ATTEMPTS_TAG = "scorer-attempts"


class Claim:
    """A held lease on one input blob. Use ``Claim.take``; release with ``release``."""

    def __init__(self, blob: BlobClient, lease: BlobLeaseClient, seconds: int):
        self.blob = blob
        self.lease = lease
        self.seconds = seconds
        self.lost = False
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

    def start_attempt(self, limit: int) -> int:
        """Count one more start of scoring this input, unless that would pass
        ``limit``; return the number of this start either way. One read and one
        write of the blob's tags, which other tags keep."""
        tags = self.blob.get_blob_tags()
        try:
            n = int(tags.get(ATTEMPTS_TAG, "0")) + 1
        except ValueError:
            n = 1
        if n <= limit:
            tags[ATTEMPTS_TAG] = str(n)
            self.blob.set_blob_tags(tags, lease=self.lease)
        return n

    def release(self) -> None:
        """Stop renewing and give the lease back if the blob still exists."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.lease.release()
        except Exception:  # the blob is gone (archived) or the lease lapsed: nothing to give back
            pass

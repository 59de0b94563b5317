"""The stop flag that SIGTERM/SIGINT set, and the job reads at safe points.

A flag rather than an exception raised from the signal handler: a signal that
lands while R is computing would otherwise be swallowed by R's callbacks, and one
inside a library could be mistaken for a failed input. The job looks at it between
inputs, between batches and before committing (``check``), so the input being
worked on stays pending and its lease is released.
"""

import threading

from scorer.errors import Interrupted

STOP = threading.Event()


def request_stop(signum=None, frame=None) -> None:  # noqa: ARG001 - usable as a signal handler
    STOP.set()


def check() -> None:
    """Raise Interrupted if a stop was requested."""
    if STOP.is_set():
        raise Interrupted()

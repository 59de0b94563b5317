"""Inputs in flight together: many small inputs in one run, without waiting on each other.

    Job.run, for each pending input:
      small (at most SCORER_SMALL_INPUT_BYTES)     Flight.start: Job._take on an input thread
      larger                                       Flight.land, then Job._take alone, as before
    and at the end, Flight.land

A small input spends most of its time waiting on Blob Storage: eight requests from its
claim to its archive, each a round trip (some 10 ms from a container to its storage
account), against a millisecond or two of R. Up to SCORER_INPUTS_IN_FLIGHT of them are
worked on at once, each on a thread of its own running the very code an input alone runs
(Job._take): its own claim, a lease renewed in the background, its attempt recorded, its
output committed under the same fences, then archived. So each input keeps every guarantee
of docs/guarantees.md, whatever the others do; a kill at any point leaves each in one of
the states a kill leaves a lone input in.

R stays on the main thread (scorer/r/bridge.py, "Threads"): while it waits for room in the
flight, or for the flight to land, the main thread serves the R door (scorer.r.door), where
the input threads' R calls wait; predict() calls of one model version that wait together
are made as one. The report is settled here too, on the main thread, as inputs land.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from scorer.monitoring.report import InputReport
from scorer.r.door import RDoor

log = logging.getLogger("scorer.job")

#: how long the main thread waits at the door before it looks at the inputs that landed
#: (an input that lands also knocks, so this bounds nothing but a lost wake-up)
_LOOK_EVERY_S = 0.05


class Flight:
    """The inputs of one run that are in flight (see the module's docstring)."""

    def __init__(self, job: Any) -> None:  # scorer.batch.job.Job, which imports this module
        self.job = job
        self.size = job.settings.inputs_in_flight
        self.door: RDoor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._flying: dict[Future, InputReport] = {}
        self._started = 0

    def takes(self, props: Any) -> bool:
        """Whether this input may fly with others: small, more than one may fly, and it is not
        one the run's container groups may split (scorer.batch.parts runs alone)."""
        s = self.job.settings
        return (self.size > 1 and props.size <= s.small_input_bytes
                and (s.parallel_jobs <= 1 or props.size <= s.split_bytes))

    def start(self, props: Any, ir: InputReport) -> None:
        """Put the input in flight, once there is room; raises what an input that landed
        meanwhile raised out of Job._take (Interrupted, storage down)."""
        if self._threads is None:
            self._open()
        while len(self._flying) >= self.size:
            self._settle(self._wait())
        self._flying[self._threads.submit(self._one, props, ir)] = ir
        self._started += 1

    def land(self, quiet: bool = False) -> None:
        """Wait for every input in flight, serving R meanwhile, and settle each. Raises the
        first error an input raised out of Job._take, unless ``quiet`` (the run is already
        ending with an error of its own)."""
        first: BaseException | None = None
        while self._flying:
            try:
                self._settle(self._wait())
            except BaseException as exc:  # the others still land before it is raised
                first = first or exc
        if first is not None and not quiet:
            raise first

    def close(self) -> None:
        if self._threads is None:
            return
        self._threads.shutdown(wait=True)
        log.info("inputs in flight landed", extra={
            "event": "flight_landed", "inputs": self._started, "most_in_flight": self.size,
            "predict_calls": self.door.calls["made"], "predict_calls_gathered": self.door.calls["gathered"],
            "inputs_in_gathered_calls": self.door.calls["inputs_gathered"]})

    def _open(self) -> None:
        job = self.job
        self.door = job.scoring.door = job.registry.through(lambda start: RDoor(start, job.settings.batch_rows))
        try:  # R before the input threads, as scorer/r/bridge.py ("Threads") asks
            self.door.start_r()
        except Exception:  # noqa: S110 - each input that needs R meets the same error, as it would alone
            pass
        self._threads = ThreadPoolExecutor(self.size, thread_name_prefix="input")

    def _one(self, props: Any, ir: InputReport) -> None:
        try:
            self.job._take(props, ir)
        finally:
            self.door.knock()

    def _wait(self) -> list[Future]:
        """Serve R until at least one input has landed; those that have."""
        while True:
            landed = [f for f in self._flying if f.done()]
            if landed:
                return landed
            self.door.serve(_LOOK_EVERY_S)

    def _settle(self, landed: list[Future]) -> None:
        first: BaseException | None = None
        for f in landed:
            self.job.settle(self._flying.pop(f))
            first = first or f.exception()
        if first is not None:
            raise first

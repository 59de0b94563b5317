"""R for other threads: calls queued for the main thread, and predict() calls gathered.

Only the main thread calls R (scorer/r/bridge.py, "Threads"). When the job works on several
inputs at once (scorer.batch.flight), each input's thread asks the door: its call waits in
a queue until the main thread serves the door (``serve``), runs it, and hands back its
answer or its error. From the main thread a call goes straight to R.

Gathering: ``predict_rows`` calls that wait together for the same model, the same
arguments and rows of one layout (scorer.data.frames.layout) are made as one predict()
call, up to ``max_rows`` rows, and the answer is split back by rows. Only for a model whose
row's prediction depends on that row alone, and comes back in the order given (the card's
``rowwise``, tested at publish: PredictSpec.gather) and that draws no random numbers (a
random one is seeded per input). The gathered call is kept
only when R said nothing about it: on an error, a warning or a refused row, each call is
made again alone, so that each input gets R's own words about its own rows. Nothing waits
to be gathered: calls gather while R is busy with an earlier one.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from scorer.data.frames import Prepared, layout
from scorer.r.pool import Answer, split
from scorer.r.predict import PredictSpec, merge, predict_rows, select_outputs


def _on_main() -> bool:
    return threading.current_thread() is threading.main_thread()


class _Ask:
    """One call waiting for the main thread, and its answer."""

    def __init__(self, run: Callable[[], Any]) -> None:
        self.run = run
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def deliver(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value, self.error = value, error
        self.done.set()


class _Predict(_Ask):
    def __init__(self, model: Any, prep: Prepared, spec: PredictSpec, key: tuple | None) -> None:
        super().__init__(lambda: None)
        self.model, self.prep, self.spec, self.key = model, prep, spec, key


class RDoor:
    """The R bridge as other threads may use it (see the module's docstring):
    ``door.read_model(...)`` and any other method of the bridge, and ``predict_rows``."""

    def __init__(self, start: Callable[[], Any], max_rows: int) -> None:
        self._start = start  # the bridge, R started on first use: on the main thread, when needed
        self._bridge: Any = None
        self.max_rows = max_rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._later: deque = deque()  # taken from the queue while gathering, for the next turns
        #: predict() calls made ("made"), of them gathered ("gathered"), and the calls these
        #: stood for ("inputs_gathered")
        self.calls: Counter = Counter()

    @property
    def _r(self) -> Any:
        if self._bridge is None:
            self._bridge = self._start()
        return self._bridge

    def start_r(self) -> None:
        """Start R now (main thread only), if it is not: raises what stops it."""
        self._r  # noqa: B018

    @property
    def started(self) -> bool:
        """Whether R was needed (and started) through the door."""
        return self._bridge is not None

    def __getattr__(self, name: str) -> Any:
        if _on_main():
            return getattr(self._r, name)
        value = self._ask(_Ask(lambda: getattr(self._r, name)))  # a property may call R too
        if callable(value):
            return lambda *args, **kwargs: self._ask(_Ask(lambda: value(*args, **kwargs)))
        return value

    def predict_rows(self, model: Any, prep: Prepared, spec: PredictSpec, warned: Counter):
        """scorer.r.predict.predict_rows through the door, gathered with others when it may be."""
        if _on_main():
            return predict_rows(self._r, model, prep, spec, warned)
        key = ((id(model), spec.predict_type, repr(spec.args), tuple(spec.output_columns or ()),
                layout(prep.columns)) if spec.gather and prep.n_kept else None)
        answer = self._ask(_Predict(model, prep, spec, key))
        warned.update(answer.warnings)
        return answer.results, answer.dropped, answer.reason

    def _ask(self, item: _Ask) -> Any:
        self._queue.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.value

    def knock(self) -> None:
        """Wake the main thread if it waits at the door (an input landed)."""
        self._queue.put(None)

    # -- the main thread's side -------------------------------------------------------

    def serve(self, timeout: float) -> bool:
        """Run what waits at the door, waiting up to ``timeout`` seconds for something (or
        a knock); whether anything ran. Main thread only."""
        item = self._next(timeout)
        if item is None:
            return False
        if isinstance(item, _Predict):
            self._predict(self._gather(item))
            return True
        try:
            item.deliver(item.run())
        except BaseException as exc:  # the asking thread raises it
            item.deliver(error=exc)
        return True

    def _next(self, timeout: float) -> _Ask | None:
        if self._later:
            return self._later.popleft()
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _gather(self, first: _Predict) -> list[_Predict]:
        """``first`` and the calls waiting that may be made with it, up to max_rows rows."""
        group, rows = [first], first.prep.n_kept
        if first.key is None:
            return group
        waiting = list(self._later)
        self._later.clear()
        while True:
            try:
                waiting.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in waiting:
            if item is None:  # a knock: the main thread looks at the flight after this turn anyway
                continue
            if (isinstance(item, _Predict) and item.key == first.key
                    and rows + item.prep.n_kept <= self.max_rows):
                group.append(item)
                rows += item.prep.n_kept
            else:
                self._later.append(item)
        return group

    def _predict(self, group: list[_Predict]) -> None:
        first = group[0]
        if len(group) > 1:
            try:
                merged = merge([g.prep for g in group])
                results, warnings = self._r.predict(first.model, merged.columns, merged.n_kept,
                                                    first.spec.predict_type, first.spec.args, None)
                if not warnings:  # else each alone: R's warning is about some input's rows
                    results = select_outputs(results, first.spec.output_columns)
                    self.calls["made"] += 1
                    self.calls["gathered"] += 1
                    self.calls["inputs_gathered"] += len(group)
                    for g, part in zip(group, split(Answer(results, None, None, Counter()),
                                                    [g.prep.n_kept for g in group])):
                        g.deliver(part)
                    return
            except BaseException:  # R refused a row of one of them: each alone says whose
                pass
        for g in group:
            warned: Counter = Counter()
            self.calls["made"] += 1
            try:
                g.deliver(Answer(*predict_rows(self._r, g.model, g.prep, g.spec, warned), warned))
            except BaseException as exc:
                g.deliver(error=exc)

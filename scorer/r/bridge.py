"""The bridge to R: the only module that imports rpy2.

R is embedded once per process and called only through the fixed functions in
``scorer/r/scorer.R`` and R's own functions, always with arguments. No R source
text is ever built from data, file names, column names or model names.

Columns cross the bridge without pandas: numbers, logicals and dates are copied into
R vectors straight from NumPy buffers, and factors as integer codes plus the model's
own levels (see ``scorer.data.frames.RColumn``). Results come back as Arrow arrays. The
columns, predict()'s call and its result go through R's C API (rpy2's cffi binding of
libR, ``openrlib``) rather than rpy2's object layer, which costs some 10 us per R
object it wraps: a one-row HTTP request spent a third of its time there. rpy2's own
protection tracker (``memorymanagement.rmemory``) guards what is made there, and its
private helpers read text and R's error message, which is why rpy2 is pinned to 3.5.

Errors: ``read_model`` raises ModelLoadError; ``predict`` raises PredictError with
R's own message, or OutOfMemory when R could not allocate. R's console output is
routed to the log, never to stdout, so the job's stdout stays pure JSON lines.

Threads. R is started on the main thread of a process, before that process starts
any thread of its own, and afterwards it is called from the main thread only, one
call at a time. The rule has a measured reason (issue 17): R's start-up changes
process-wide state that C code on other threads reads without a lock. It calls
setenv (R_HOME, the Renviron files, R_SESSION_TMPDIR), and glibc's setenv may
move the environment array while another thread's getenv walks it. When R started
on a thread of its own beside the imports, 4 of 600 starts died of SIGSEGV; the
core dump shows the main thread in getenv("LANGUAGE"), reached from strerror()
after an import's failed stat(). So:

- `scorer run` and `scorer models publish` call ``start()`` before anything else
  that could start a thread (the blob I/O pool, a lease renewer, a download);
- the scoring pipeline's reader and writer threads do Arrow work only, never R;
- work that needs R from another thread is handed to the main thread (a queue),
  and work that needs R in parallel runs in other processes, each with its own R.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.data.frames import RColumn, layout, result_name
from scorer.errors import ModelLoadError, OutOfDisk, OutOfMemory, PredictError

log = logging.getLogger("scorer.r")

NA_INTEGER = -(2**31)

_lock = threading.Lock()
_instance: "RBridge | None" = None
_failure: BaseException | None = None  # R could not start; raised again wherever R is asked for


@dataclass
class LoadedModel:
    """An R model object living in the embedded R session."""

    robj: Any
    r_class: list[str]


@dataclass
class LoadedScript:
    """An R scoring function: the environment its script ran in (which holds score()),
    the script's path, the packages it uses and score()'s argument names."""

    env: Any
    path: Path
    packages: list[str]
    args: list[str]


def bridge() -> "RBridge":
    """The process's one R session, started on first use, on the main thread.

    Raises RuntimeError when R has not been started and this is not the main
    thread (see "Threads" above), and again, each time, whatever stopped R from
    starting.
    """
    global _instance, _failure
    with _lock:
        if _instance is None:
            if _failure is not None:
                raise _failure
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("R must be started on the main thread (scorer.r.bridge.start)")
            try:
                _check_temp_dir()
                _instance = RBridge()
            except BaseException as exc:  # R cannot be started twice in one process
                _failure = exc
                raise
        return _instance


def start() -> None:
    """Start R now, on the main thread, before the caller starts any thread.

    A failure is kept and raised by ``bridge()`` where R is first needed, so that
    a job whose R cannot start still leaves its inputs pending and writes its
    report. Raises RuntimeError when called off the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("R must be started on the main thread (scorer.r.bridge.start)")
    # the threads already running: none on the command line's paths (a test checks it)
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    t = time.monotonic()
    try:
        bridge()
    except BaseException:  # kept in _failure, raised by bridge() where R is needed
        return
    log.debug("R started", extra={"event": "r_started", "on_thread": threading.current_thread().name,
                                  "other_threads": others, "seconds": round(time.monotonic() - t, 3),
                                  "r_functions": bridge().r_functions})


def _check_temp_dir() -> None:
    """Raise OutOfDisk when R could not make its session's temporary directory: R would
    end the process at once ("Fatal error: cannot create 'R_TempDir'", exit 2, no report,
    issue 26). R takes the first of TMPDIR, TMP and TEMP that is set, else /tmp."""
    where = next((os.environ[v] for v in ("TMPDIR", "TMP", "TEMP") if os.environ.get(v)), "/tmp")
    try:
        os.rmdir(tempfile.mkdtemp(prefix="scorer-probe-", dir=where))
    except OSError as exc:
        raise OutOfDisk(f"R cannot start: its temporary directory cannot be made in {where} ({exc.strerror or exc}; "
                        "no space or no inodes left, or not writable).",
                        hint="Free space and inodes in TMPDIR, or point TMPDIR at a writable disk with room; the "
                        "inputs stay in input/ and are retried by the next run.") from None


def discard_session() -> None:
    """Remove R's session temp dir, which R's own exit would have removed: the
    command line ends with os._exit (see scorer.cli._quick_exit)."""
    with _lock:
        if _instance is not None:
            shutil.rmtree(str(_instance._call("tempdir")[0]), ignore_errors=True)


def _skip_start_up_probes() -> None:
    """Spare rpy2's two start-up subprocesses (0.2-0.3 s of every cold start).

    rpy2 3.5 runs `R RHOME` when R_HOME is unset and, always, `Rscript -e` to read
    the LD_LIBRARY_PATH R would give its own child processes. The job starts no R
    subprocess, so this process's LD_LIBRARY_PATH serves, and R_HOME is where
    Debian's (or a source build's) libR.so is. Anything unusual falls back to
    rpy2's own probes.
    """
    import rpy2.situation as situation

    if not os.environ.get("R_HOME"):
        for home in ("/usr/lib/R", "/usr/local/lib/R"):
            if os.path.exists(os.path.join(home, "lib", "libR.so")):
                os.environ["R_HOME"] = home
                break
    if os.environ.get("R_HOME"):
        situation.r_ld_library_path_from_subprocess = lambda r_home: os.environ.get("LD_LIBRARY_PATH", "")
    # Attach only what scoring uses; `methods` (0.1 s) loads when a model's package
    # imports it, as S4-based packages do.
    os.environ.setdefault("R_DEFAULT_PACKAGES", "utils,stats")
    # Without TZ, R asks timedatectl for the time zone the first time a package
    # wants it (caret, prophet), which prints "System has not been booted with
    # systemd" in containers. A batch job's clock is UTC; date-times that reach R
    # carry their own time zone (scorer.data.frames), so TZ only sets R's default.
    os.environ.setdefault("TZ", "UTC")


def _no_event_callback() -> None:
    """Unhook rpy2's R_ProcessEvents callback.

    R calls it every so often while it computes, and the callback must take the
    GIL. While another Python thread is busy (the job reads and writes batches on
    two threads as R predicts), each call waits up to the interpreter's switch
    interval: a loop R runs in 0.12 s took 23 s that way on this machine. The
    callback does nothing for us: it serves graphics devices, and the job
    interrupts R never (it stops between batches, see scorer.batch.stopping).
    """
    from rpy2.rinterface_lib import openrlib

    openrlib.rlib.ptr_R_ProcessEvents = openrlib.ffi.NULL


def _sexp(obj: Any) -> Any:
    """The SEXP (cffi pointer) under an rpy2 object."""
    return obj.__sexp__._cdata


class RBridge:
    def __init__(self) -> None:
        _skip_start_up_probes()
        import rpy2.rinterface as ri
        from rpy2.rinterface_lib import callbacks

        self._warnings: list[str] = []
        self._shapes: dict[tuple, Any] = {}  # R lists describing a column layout (_shape)
        self._made: dict[tuple, Any] = {}    # predict()'s type and arguments as R lists (_predict_args)
        # Route R's console to the log before R prints anything: stdout belongs to
        # the JSON-lines log.
        callbacks.consolewrite_print = lambda s: log.debug("R: %s", s.rstrip())
        callbacks.consolewrite_warnerror = self._on_r_stderr
        callbacks.showmessage = lambda s: log.debug("R: %s", s.rstrip())
        # rpy2 sets SIGINT back to Python's default when R starts on the main
        # thread, which would turn Ctrl-C into a KeyboardInterrupt anywhere in the
        # job instead of the stop flag checked at safe points (scorer.batch.stopping).
        on_main = threading.current_thread() is threading.main_thread()
        sigint = signal.getsignal(signal.SIGINT) if on_main else None
        ri.initr_simple()
        if sigint is not None:
            signal.signal(signal.SIGINT, sigint)
        _no_event_callback()
        from rpy2.rinterface_lib import _rinterface_capi, conversion, memorymanagement, openrlib

        self.ri = ri
        self._ffi, self._rlib, self._rmemory = openrlib.ffi, openrlib.rlib, memorymanagement.rmemory
        self._string_at, self._charsxp = _rinterface_capi._string_getitem, conversion._str_to_charsxp
        self._error_message = _rinterface_capi._geterrmessage
        self._eval_error = self._ffi.new("int *")
        self._base = ri.baseenv
        self._globalenv = ri.globalenv
        self.r_functions = self._load_functions()
        self._globalenv.find("scorer_guard_quit")()  # quit() in a model's code: an error, not the job's end
        self._fn = {name: self._globalenv.find(name) for name in
                    ("scorer_schema", "scorer_packages", "scorer_predict", "scorer_predict_formals",
                     "scorer_dependencies", "scorer_load_script", "scorer_call_score", "scorer_package_versions",
                     "scorer_reference_frame", "scorer_frame", "scorer_columns", "scorer_response_vars",
                     "scorer_binary_classes", "scorer_class_levels")}

    def _load_functions(self) -> str:
        """Put scorer.R's functions in R's global environment: byte-compiled from
        scorer-compiled.rds (made by r/compile.R at setup and image build) when it was
        made from this scorer.R by this R, else by sourcing scorer.R, which R's JIT then
        compiles function by function at first use (0.08 s of a short run). Returns
        which: "compiled" or "source"."""
        r = resources.files("scorer").joinpath("r")
        source = r.joinpath("scorer.R")
        bundle = r.joinpath("scorer-compiled.rds")
        if bundle.is_file():
            try:
                with resources.as_file(bundle) as path:
                    made = self._named(self._call("readRDS", self.ri.StrSexpVector([str(path)])))
                current = (str(made["source_md5"][0]) == hashlib.md5(source.read_bytes()).hexdigest()
                           and str(made["r_version"][0]) == str(self._base.find("R.version.string")[0]))
            except Exception as exc:  # a damaged file costs the compile time, never the run
                log.warning(f"scorer-compiled.rds could not be read ({exc}); sourcing scorer.R instead",
                            extra={"event": "r_functions_unreadable"})
                current = False
            if current:
                self._call("list2env", made["functions"], self._globalenv)
                return "compiled"
        with resources.as_file(source) as path:
            self._call("source", self.ri.StrSexpVector([str(path)]))
        return "source"

    # -- plumbing -------------------------------------------------------------------

    def _on_r_stderr(self, s: str) -> None:
        s = s.rstrip()
        if s:
            self._warnings.append(s)
            log.debug("R stderr: %s", s)

    def _call(self, fname: str, *args: Any, **kwargs: Any) -> Any:
        return self._base.find(fname)(*args, **kwargs)

    def _r_error_text(self, exc: Exception) -> str:
        msg = str(exc).strip()
        # rpy2 puts the R condition's message in the exception; R may also have
        # written "Error in ...:" lines to stderr, which are more specific.
        errs = [w for w in self._warnings if w.startswith("Error")]
        self._warnings.clear()
        if errs:
            msg = " ".join(e.replace("\n", " ") for e in errs)
        return msg

    @property
    def r_version(self) -> str:
        v = self._call("getRversion")
        return str(self._call("as.character", v)[0])

    # -- models ---------------------------------------------------------------------

    def loaded_namespaces(self) -> list[str]:
        return list(self._call("loadedNamespaces"))

    def read_model(self, path: Path, what: str) -> LoadedModel:
        """readRDS a model file.

        ``what`` names the model for messages. Raises ModelLoadError when R cannot
        read the file.
        """
        self._warnings.clear()
        try:
            robj = self._call("readRDS", self.ri.StrSexpVector([str(path)]))
        except Exception as exc:  # rpy2 raises RRuntimeError; R may fail in other ways
            raise ModelLoadError(
                f"{what}: R could not read the .rds file: {self._r_error_text(exc)}",
                hint="Check that the file was written by saveRDS() and published whole; "
                "publish it again with `scorer models publish`.",
            ) from None
        return LoadedModel(robj=robj, r_class=self.classes(robj))

    def classes(self, robj: Any) -> list[str]:
        return list(self._call("class", robj))

    def describe(self, model: LoadedModel, loaded_before: list[str]) -> dict:
        """What a model card records about a model: the packages it needs (with
        versions; ``top_packages``, those no other needed package depends on;
        ``attach``, those its formula calls) and its input schema."""
        found = self._named(self._fn["scorer_packages"](model.robj, self.ri.StrSexpVector(loaded_before)))
        pkgs = found["packages"]
        names = list(self._call("names", pkgs)) if len(pkgs) else []
        packages = {n: (None if v is self.ri.NA_Character else str(v)) for n, v in zip(names, pkgs)}
        schema = self._fn["scorer_schema"](model.robj)
        return {"packages": packages, "top_packages": [str(x) for x in found["top"]],
                "attach": [str(x) for x in found["attach"]], "input_schema": self._schema_to_py(schema)}

    def reference_frame(self, model: LoadedModel, variables: list[str]) -> tuple[pa.Table, str] | None:
        """The rows ``model`` was fitted on, when it keeps them (glm's data, else the
        model frame of lm and glm): the named variables that are columns there, and
        which part they came from ("data" or "model"). None when it keeps neither."""
        got = self._fn["scorer_reference_frame"](model.robj, self.ri.StrSexpVector(variables))
        if got is self.ri.NULL:
            return None
        got = self._named(got)
        columns = self._result_columns(got["frame"])
        return pa.Table.from_arrays([a for _, a in columns], names=[n for n, _ in columns]), str(got["part"][0])

    def response_variables(self, model: LoadedModel) -> list[str]:
        """The variables of the model's response (time and status of Surv(time, status))."""
        return [str(x) for x in self._fn["scorer_response_vars"](model.robj)]

    def class_levels(self, model: LoadedModel) -> list[str] | None:
        """A classifier's classes, in its own order, where its family keeps them; else None."""
        got = self._fn["scorer_class_levels"](model.robj)
        return None if got is self.ri.NULL else [str(x) for x in got]

    def binary_classes(self, model: LoadedModel) -> list[str] | None:
        """The two classes (negative, positive) of a model whose single number is the
        probability of the second (glm binomial, gbm bernoulli); None for any other."""
        got = self._fn["scorer_binary_classes"](model.robj)
        return None if got is self.ri.NULL else [str(x) for x in got]

    def dependencies(self, packages: list[str]) -> set[str]:
        """``packages`` and every package they need, recursively (installed ones only)."""
        return {str(x) for x in self._fn["scorer_dependencies"](self.ri.StrSexpVector(packages))}

    def predict_formals(self, model: LoadedModel) -> dict | None:
        """The predict() method serving the model: its name, its arguments, and the
        choices of its ``type`` argument when it declares them; None if it has none."""
        f = self._fn["scorer_predict_formals"](model.robj)
        if f is self.ri.NULL:
            return None
        f = self._named(f)
        return {"method": str(f["method"][0]), "names": [str(x) for x in f["names"]],
                "type_choices": [str(x) for x in f["type_choices"]]}

    def attach(self, packages: list[str]) -> None:
        """Attach packages a model's formula calls (ns() from splines): predict()
        evaluates the formula in the global environment, which sees attached
        packages only. Raises ModelLoadError for one that is not installed."""
        for p in packages:
            try:
                self._call("library", self.ri.StrSexpVector([p]), **{"character.only": self.ri.BoolSexpVector([True])})
            except Exception as exc:
                raise ModelLoadError(f"R package {p!r}, which the model's formula uses, could not be attached: "
                                     f"{self._r_error_text(exc)}",
                                     hint=f"Add r-cran-{p.lower()} to docker/r-packages.txt and rebuild the image.",
                                     packages=[p]) from None

    def _named(self, rlist: Any) -> dict[str, Any]:
        return dict(zip([str(n) for n in self._call("names", rlist)], rlist))

    def _schema_to_py(self, schema: Any) -> list[dict] | None:
        if schema is self.ri.NULL:
            return None
        fields = self._named(schema)
        grouping = {str(x) for x in fields.get("grouping", [])}
        out = []
        for i, name in enumerate(fields["names"]):
            lv = fields["levels"][i]
            item = {
                "name": str(name),
                "class": str(fields["classes"][i]),
                "levels": None if lv is self.ri.NULL else [str(x) for x in lv],
            }
            if item["class"] == "POSIXct":
                item["tz"] = str(fields["tz"][i]) or "UTC"
            if item["name"] in grouping:
                item["grouping"] = True  # a mixed model's grouping factor
            out.append(item)
        return out

    def missing_packages(self, packages: list[str]) -> list[str]:
        """Load each package's namespace (which registers its predict methods);
        return the ones that are not installed."""
        missing = []
        for p in packages:
            ok = self._call("requireNamespace", self.ri.StrSexpVector([p]), quietly=self.ri.BoolSexpVector([True]))
            if not ok[0]:
                missing.append(p)
        return missing

    def package_versions(self, packages: list[str]) -> dict[str, str | None]:
        """Each installed package's version; None for one that is not installed."""
        if not packages:
            return {}
        got = self._fn["scorer_package_versions"](self.ri.StrSexpVector(packages))
        return {p: (None if v is self.ri.NA_Character else str(v)) for p, v in zip(packages, got)}

    # -- R scoring functions --------------------------------------------------------

    def load_script(self, path: Path, what: str) -> LoadedScript:
        """Parse a script and run it in a fresh environment; it must define score().

        Raises ModelLoadError with R's message (the line of a syntax error, the line
        where running it failed) when it cannot.
        """
        self._warnings.clear()
        got = self._named(self._fn["scorer_load_script"](self.ri.StrSexpVector([str(path)])))
        if "error" in got and got["error"] is not self.ri.NULL:
            raise ModelLoadError(f"{what}: {got['error'][0]}",
                                 hint="Fix the script so that `source()` runs it and it defines "
                                 "score <- function(data, ...) returning a data frame, then publish it again.")
        return LoadedScript(env=got["env"], path=path, packages=[str(x) for x in got["packages"]],
                            args=[str(x) for x in got["args"]])

    def call_score(self, script: LoadedScript, columns: dict[str, RColumn], nrows: int,
                   params: list[dict], seed: int) -> tuple[list[tuple[str, pa.Array]], list[str]]:
        """set.seed(seed), then score(data, <params>) on these columns: its data frame as
        named Arrow arrays, and R's warnings. Raises PredictError with R's message and where in the script,
        OutOfMemory when R could not allocate."""
        data = self._data_frame(columns, nrows)
        self._warnings.clear()
        try:
            got = self._named(self._fn["scorer_call_score"](script.env, data, self._arg_list(params),
                                                            self.ri.StrSexpVector([str(script.path)]),
                                                            self.ri.IntSexpVector([seed])))
        except Exception as exc:
            text = self._r_error_text(exc)
            if "cannot allocate" in text:
                raise OutOfMemory(f"R ran out of memory in score(): {text}") from None
            raise PredictError(f"the R function score() in {script.path.name} failed: {text}",
                               hint="Fix the function (or the input it cannot handle) and publish or drop again; "
                               "R's message and the script's line are above.") from None
        return self._result_columns(got["value"]), [str(w) for w in got["warnings"]]

    # -- scoring --------------------------------------------------------------------

    def predict(self, model: LoadedModel, columns: dict[str, RColumn], nrows: int,
                predict_type: str | None, args: list[dict] | None = None, seed: int | None = None
                ) -> tuple[list[tuple[str, pa.Array]], list[str]]:
        """Call R's predict(model, newdata, type, <args>) on these columns.

        ``args`` are the card's predict arguments ({"name", "type", "value"}, see
        scorer.models.registry.parse_predict_arg); ``seed``, R's random seed, set first. Returns the result as named Arrow arrays
        (one, unnamed (""), for a vector result) and R's warnings. Raises
        PredictError with R's message when predict() fails or returns the wrong
        number of rows, OutOfMemory when R cannot allocate.
        """
        rlib = self._rlib
        self._warnings.clear()
        # everything made through the C API is protected from R's garbage collector
        # (rmemory) before the next allocation, which could collect anything unprotected
        with self._rmemory() as rmemory:
            keep = rmemory.protect
            cols = self._c_columns(columns, nrows, rmemory)
            nr = keep(rlib.Rf_ScalarInteger(nrows))
            # scorer_predict(model, cols, nrows, shape, call): one call to R per batch or request
            call = keep(rlib.Rf_lang6(_sexp(self._fn["scorer_predict"]), _sexp(model.robj), cols, nr,
                                      _sexp(self._shape(columns)), _sexp(self._predict_args(predict_type, args or [], seed))))
            got = keep(rlib.R_tryEval(call, rlib.R_GlobalEnv, self._eval_error))
            if self._eval_error[0]:
                text = self._r_error_text(RuntimeError(self._error_message().strip()))
                if "cannot allocate" in text:  # R's "cannot allocate vector of size ...": memory, not the data
                    raise OutOfMemory(f"R ran out of memory in predict() on {nrows} rows: {text}")
                raise PredictError(f"R's predict() failed: {text}")
            warned = self._c_strings(rlib.VECTOR_ELT(got, 4))
            result = [(result_name(n), a) for n, a in self._c_result(got)]
        for name, arr in result:
            if len(arr) != nrows:
                raise PredictError(
                    f"R's predict() returned {len(arr)} values for {nrows} rows",
                    hint="The model's predict() drops rows (often rows with missing "
                    "values); fill or remove missing values before scoring.",
                )
        return result, warned

    def _predict_args(self, predict_type: str | None, args: list[dict], seed: int | None = None) -> Any:
        """predict()'s type, the card's other arguments and R's seed, as the R list
        scorer_predict takes: made once per model (a one-row request would otherwise spend
        a tenth of its time on them)."""
        key = (predict_type, tuple((a["name"], a["type"], repr(a["value"])) for a in args), seed)
        made = self._made.get(key)
        if made is None:
            ri = self.ri
            made = ri.ListSexpVector([ri.NULL if predict_type is None else ri.StrSexpVector([predict_type]),
                                      self._arg_list(args), ri.NULL if seed is None else ri.IntSexpVector([seed])])
            if len(self._made) > 256:
                self._made.clear()
            self._made[key] = made
        return made

    def _arg_list(self, args: list[dict]) -> Any:
        """The card's predict arguments as a named R list: values typed as they
        were written (numbers, TRUE/FALSE, text), never evaluated as R code."""
        ri = self.ri
        made = {"double": lambda v: ri.FloatSexpVector([float(x) for x in v]),
                "integer": lambda v: ri.IntSexpVector([int(x) for x in v]),
                "logical": lambda v: ri.BoolSexpVector([ri.NA_Logical if x is None else bool(x) for x in v]),
                "character": lambda v: ri.StrSexpVector([str(x) for x in v]),
                "NULL": lambda v: ri.NULL}
        # a value is one value or, written c(...), a vector of them; never R text
        values = [made[a["type"]](a["value"] if isinstance(a["value"], list) else [a["value"]]) for a in args]
        out = ri.ListSexpVector(values)
        return self._call("names<-", out, ri.StrSexpVector([a["name"] for a in args])) if args else out

    # -- R's C API: vectors in, results out -------------------------------------------------

    def _c_columns(self, columns: dict[str, RColumn], nrows: int, rmemory: Any) -> Any:
        """The columns' values as an R list of plain vectors (scorer_frame adds the
        attributes), protected in ``rmemory`` (rpy2's protection tracker)."""
        rlib, ffi = self._rlib, self._ffi
        out = rmemory.protect(rlib.Rf_allocVector(rlib.VECSXP, len(columns)))
        for i, col in enumerate(columns.values()):
            if col.kind == "character":
                v = rlib.Rf_allocVector(rlib.STRSXP, nrows)
                rlib.SET_VECTOR_ELT(out, i, v)  # kept by the list before its strings are made
                for j, text in enumerate(col.values):
                    rlib.SET_STRING_ELT(v, j, self._charsxp(text))  # None: NA
                continue
            if col.kind in ("numeric", "date", "posixct"):
                sexptype, values = rlib.REALSXP, np.ascontiguousarray(col.values, dtype=np.float64)
            elif col.kind in ("factor", "logical"):
                sexptype = rlib.INTSXP if col.kind == "factor" else rlib.LGLSXP
                values = np.ascontiguousarray(col.values, dtype=np.int32)
            else:  # pragma: no cover - RColumn.kind is a closed set
                raise ValueError(col.kind)
            v = rlib.Rf_allocVector(sexptype, nrows)
            rlib.SET_VECTOR_ELT(out, i, v)
            if nrows:
                ffi.memmove(rlib.DATAPTR(v), ffi.from_buffer(values), values.nbytes)
        return out

    def _c_strings(self, v: Any) -> list[str | None]:
        return [self._string_at(v, i) for i in range(self._rlib.Rf_xlength(v))]

    def _c_result(self, got: Any) -> list[tuple[str, pa.Array]]:
        """scorer_columns' answer, list(columns, names, kinds, tz), as named Arrow arrays."""
        rlib = self._rlib
        columns = rlib.VECTOR_ELT(got, 0)
        names, kinds, tz = (self._c_strings(rlib.VECTOR_ELT(got, k)) for k in (1, 2, 3))
        return [(names[i], self._c_array(rlib.VECTOR_ELT(columns, i), kinds[i], tz[i])) for i in range(len(names))]

    def _c_array(self, v: Any, kind: str, tz: str) -> pa.Array:
        """A plain R vector as an Arrow array, NA as null (``kind`` from scorer_columns)."""
        rlib, ffi = self._rlib, self._ffi
        n = rlib.Rf_xlength(v)

        def values(dtype: Any) -> np.ndarray:
            if not n:
                return np.zeros(0, dtype)
            return np.frombuffer(ffi.buffer(rlib.DATAPTR(v), n * np.dtype(dtype).itemsize), dtype=dtype).copy()

        if kind in ("double", "date", "posixct"):
            a = values(np.float64)
            # R's NA -> null, R's NaN (0/0) stays NaN: R tells them apart by the NaN's low
            # word, 1954 (R_IsNA). A mask rather than from_pandas=True, which would import
            # pandas when it happens to be installed (0.3 s)
            mask = np.isnan(a) & ((a.view(np.uint64) & 0xFFFFFFFF) == 1954)
            if kind == "date":
                return pa.array(np.where(mask, 0, a).astype(np.int32), pa.date32(), mask=mask)
            if kind == "posixct":
                micros = np.where(mask, 0, np.round(a * 1e6)).astype(np.int64)
                return pa.array(micros, pa.timestamp("us", tz=tz or "UTC"), mask=mask)
            return pa.array(a, mask=mask)
        if kind == "integer":
            a = values(np.int32)
            return pa.array(a, mask=a == NA_INTEGER)
        if kind == "logical":
            a = values(np.int32)
            return pa.array(a == 1, mask=a == NA_INTEGER)
        if kind == "character":
            return pa.array(self._c_strings(v), pa.string())
        raise PredictError(
            f"R's predict() returned a value of R type {kind!r}, which scorer cannot write to a table",
            hint="Choose a --predict-type that returns numbers, classes or probabilities.",
        )

    # -- data frames and results through rpy2 (scripts, reference frames) --------------------

    def _shape(self, columns: dict[str, RColumn]) -> Any:
        """What scorer_frame needs besides the values: list(names, kinds, levels,
        ordered, tz); the same for every batch or request of a model, so made once."""
        key = layout(columns)
        shape = self._shapes.get(key)
        if shape is None:
            ri, cols = self.ri, list(columns.values())
            shape = ri.ListSexpVector([
                ri.StrSexpVector(list(columns)), ri.StrSexpVector([c.kind for c in cols]),
                ri.ListSexpVector([ri.StrSexpVector(c.levels) if c.kind == "factor" else ri.NULL for c in cols]),
                ri.BoolSexpVector([c.ordered for c in cols]), ri.StrSexpVector([c.tz or "UTC" for c in cols])])
            if len(self._shapes) > 256:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _data_frame(self, columns: dict[str, RColumn], nrows: int) -> Any:
        """The columns as an R data.frame, in one call to R (scorer_frame)."""
        from rpy2.rinterface_lib.conversion import _cdata_to_rinterface

        with self._rmemory() as rmemory:
            cols = _cdata_to_rinterface(self._c_columns(columns, nrows, rmemory))  # rpy2 keeps it from here
        return self._fn["scorer_frame"](cols, self.ri.IntSexpVector([nrows]), self._shape(columns))

    def _result_columns(self, out: Any) -> list[tuple[str, pa.Array]]:
        """An R vector, matrix or data frame as named Arrow arrays (one, unnamed, for a vector)."""
        got = self._fn["scorer_columns"](out)  # an rpy2 object: kept from R's collector while read
        return self._c_result(_sexp(got))

"""The model registry in the models container.

Layout: ``<name>/v<N>/model.rds`` and ``<name>/v<N>/card.json``. Versions are
immutable (written with "create only", never overwritten) and numbered from 1.
The card is written last, so a version exists only once its card does; the
current version of a model is the highest such N.

The card records the version and sha256, the R class, the R version and the
versions of the packages the model needs, the predict type, and the input schema
taken from the model itself (variables, classes, factor levels).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from azure.core.exceptions import ResourceExistsError

from scorer import __version__
from scorer.data.formats import CsvOptions, format_of, open_input
from scorer.data.frames import check_columns, na_kept
from scorer.errors import (ConfigError, InputError, InputFormatError, ModelError, ModelLoadError, ModelNotFound,
                           PredictError, ScorerError)
from scorer.log import now
from scorer.models.cards import Options, describe_function, describe_model
from scorer.models.profile import profile_reference
from scorer.models.shadows import mark
from scorer.r.predict import PredictSpec
from scorer.storage import Store

log = logging.getLogger("scorer.models")

# A model name is the first path segment of its inputs; keep it to characters that
# are safe in blob names, URLs and file systems.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

#: the drift profile's name beside a version's card (scorer.monitoring.drift)
PROFILE = "profile.json"


#: the empty blobs that mark a model's versions that are not current however high: its shadow,
#: <name>/shadow-v<N>, and one that was a shadow until stopped and never promoted, <name>/held-v<N>
#: (scorer.models.shadows)
SHADOW_MARKER = r"/(shadow|held)-v(\d+)"


def check_name(name: str) -> str | None:
    """Why ``name`` is not a valid model name, or None when it is."""
    if not NAME_RE.match(name) or ".." in name:
        return ("model names are 1-63 letters, digits, '_', '-' or '.', start with a letter "
                "or digit, and contain no '..'")
    return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def debian_package_list(path: Path) -> set[str] | None:
    """R package names the image installs, from docker/r-packages.txt (None if absent)."""
    if not path.exists():
        return None
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("r-cran-"):
            names.add(line[len("r-cran-"):])
    return names


@dataclass
class Published:
    card: dict
    warnings: list[str]


def _what(card: dict) -> str:
    """How messages name a card's model or function: "model 'churn' version 2"."""
    kind = "function" if card.get("kind") == "function" else "model"
    return f"{kind} {card['name']!r} version {card['version']}"


class Registry:
    """Published models: publish, list, resolve and load (verified, cached per run)."""

    def __init__(self, store: Store, r: Any = None):
        self.store = store
        self.container = store.settings.models_container
        self._r = r  # the R bridge; started lazily so `models list` needs no R
        self._cache: dict[tuple[str, int], Any] = {}
        self._failed: dict[tuple[str, int], ScorerError] = {}
        self._profiles: dict[tuple[str, int], dict] = {}
        self._files: dict[tuple[str, int], Path] = {}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._loading = threading.Lock()

    def through(self, make: Callable[[Callable[[], Any]], Any]) -> Any:
        """Call R through ``make(start)`` from now on, and return it: the job's door
        (scorer.r.door) when inputs on threads of their own load models. ``start`` gives the
        bridge, starting R on first use (on the main thread)."""
        held = self._r
        if held is None:
            from scorer.r.bridge import bridge
        self._r = made = make(lambda: held if held is not None else bridge())
        return made

    @property
    def r_started(self) -> bool:
        return self._r is not None and getattr(self._r, "started", True)

    @property
    def r(self) -> Any:
        if self._r is None:
            from scorer.r.bridge import bridge
            self._r = bridge()
        return self._r

    # -- reading --------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        """Published versions of ``name`` (those with a card), ascending."""
        return self.listing(name)[0]

    def listing(self, name: str) -> tuple[list[int], int | None, set[int]]:
        """``name``'s published versions, ascending, its shadow's (None: none), and the versions
        that are not current however high (the shadow, and those held), in one listing."""
        out, shadow, held = [], None, set()
        for b in self.store.list_names(self.container, prefix=f"{name}/"):
            m = re.fullmatch(re.escape(name) + r"/v(\d+)/card\.json", b.name)
            if m:
                out.append(int(m.group(1)))
            s = re.fullmatch(re.escape(name) + SHADOW_MARKER, b.name)
            if s:
                held.add(int(s.group(2)))
                if s.group(1) == "shadow":
                    shadow = int(s.group(2))
        return sorted(out), (shadow if shadow in out else None), held

    def current_and_shadow(self, name: str) -> tuple[dict, dict | None]:
        """The current card of ``name`` and its shadow's (or None), from one listing."""
        seen = self.listing(name)
        return self.card(name, seen=seen), (None if seen[1] is None else self.card(name, seen[1], seen=seen))

    def _highest_slot(self, name: str) -> int:
        """The highest version number with any file, card or not: a publish that
        died between the .rds and the card leaves a slot that is never reused."""
        nums = [int(m.group(1)) for b in self.store.list_names(self.container, prefix=f"{name}/v")
                if (m := re.fullmatch(re.escape(name) + r"/v(\d+)/.*", b.name))]
        return max(nums, default=0)

    def catalog(self) -> dict[str, list[int]]:
        """Every published model's versions (those with a card), ascending, but its shadow
        (which requests reach only by asking for its version): one listing. The last is
        the current one; a model whose only version is its shadow is left out."""
        out: dict[str, list[int]] = {}
        held: dict[str, set[int]] = {}
        for b in self.store.list_names(self.container):
            m = re.fullmatch(r"([^/]+)/v(\d+)/card\.json", b.name)
            if m:
                out.setdefault(m.group(1), []).append(int(m.group(2)))
            s = re.fullmatch(r"([^/]+)" + SHADOW_MARKER, b.name)
            if s:
                held.setdefault(s.group(1), set()).add(int(s.group(3)))
        kept = {n: sorted(v for v in vs if v not in held.get(n, set())) for n, vs in out.items()}
        return {n: v for n, v in sorted(kept.items()) if v}

    def names(self) -> list[str]:
        names = set()
        for b in self.store.list_names(self.container):
            if b.name.endswith("/card.json"):
                names.add(b.name.split("/", 1)[0])
        return sorted(names)

    def card(self, name: str, version: int | None = None, seen: tuple | None = None) -> dict:
        """The card of ``name`` at ``version`` (default: the current one: the highest version
        but the shadow's, docs/models.md "A challenger in the shadow").

        Raises ModelNotFound, naming the models that do exist.
        """
        why = check_name(name)
        if why:
            raise ModelNotFound(f"{name!r} is not a valid model name: {why}.",
                                hint="Put inputs under input/<model-name>/ with a published model's name.",
                                model=name)
        versions, shadow, held = seen or self.listing(name)  # seen: a listing already read
        if not versions:
            known = self.names()
            raise ModelNotFound(
                f"No model named {name!r} is published.",
                hint=("Publish it with `scorer models publish MODEL.rds --name " + name + "`, or drop the input "
                      "under one of: " + (", ".join(known) if known else "(no models are published yet)") + "."),
                model=name,
            )
        if version is None:
            champions = [v for v in versions if v not in held]
            if not champions:
                raise ModelNotFound(f"Model {name!r} has no current version: its versions ({versions}) are its shadow "
                                    "or were.", hint=f"Make the shadow current: `scorer models promote {name}`, or "
                                    "publish a version without --shadow.", model=name)
            version = champions[-1]
        elif version not in versions:
            raise ModelNotFound(f"Model {name!r} has no version {version} (versions: {versions}).",
                                hint="Pick one of the published versions.", model=name)
        return self.store.get_json(self.container, f"{name}/v{version}/card.json")

    def fetch(self, card: dict) -> bytes:
        """The verified bytes of ``card``'s model or function file: the download part of
        ``load``, which a caller may run on another thread (it does not touch R) and pass
        to ``load`` as ``data``. Raises ModelLoadError for a damaged file."""
        file = "function.R" if card.get("kind") == "function" else "model.rds"
        return self._verified(f"{card['name']}/v{card['version']}/{file}", card["sha256"], _what(card), card["name"])

    def load(self, card: dict, data: bytes | None = None) -> Any:
        """The R model (LoadedModel) or function (LoadedScript) for ``card``,
        checksum-verified and loaded once per run (``data``: the file, from ``fetch``).

        Raises ModelLoadError when a file's sha256 differs from the card's, when a
        package it needs is not installed, or when R cannot read or run it.
        """
        key = (card["name"], int(card["version"]))
        if key in self._cache:
            return self._cache[key]
        with self._loading:  # inputs in flight (scorer.batch.flight) load a version once, not once each
            return self._load(key, card, data)

    def _load(self, key: tuple[str, int], card: dict, data: bytes | None) -> Any:
        if key in self._cache:
            return self._cache[key]
        if key in self._failed:
            raise self._failed[key]
        kind = card.get("kind", "model")
        what = _what(card)
        prefix = f"{card['name']}/v{card['version']}"
        try:
            self.r  # started before the download's thread, if not already: see "Threads" in scorer/r/bridge.py
            if data is None:
                data = self.fetch(card)
            missing = self.r.missing_packages(list(card.get("packages") or {}))
            if missing:
                raise ModelLoadError(
                    f"{what} needs R package(s) {', '.join(missing)}, which are not installed where the job runs.",
                    hint="Add " + ", ".join(f"r-cran-{p.lower()}" for p in missing)
                    + " to docker/r-packages.txt and rebuild the image.",
                    model=card["name"], packages=missing,
                )
            if kind == "function":
                where = Path(tempfile.mkdtemp(prefix="scorer-fn-", dir=self._workdir()))
                for f in card.get("files") or []:
                    (where / f["name"]).write_bytes(self._verified(f"{prefix}/files/{f['name']}", f["sha256"], what,
                                                                   card["name"]))
                (where / card["source_file"]).write_bytes(data)
                model = self.r.load_script(where / card["source_file"], what)
            else:
                self.r.attach(card.get("attach") or [])
                # kept for the run: R worker processes (scorer.r.pool) read the model from it
                path = Path(self._workdir()) / f"{card['name']}.v{card['version']}.rds"
                path.write_bytes(data)
                self._files[key] = path
                model = self.r.read_model(path, what)
        except ScorerError as exc:
            self._failed[key] = exc
            raise
        self._cache[key] = model
        return model

    def forget(self, name: str, version: int) -> None:
        """Drop a loaded model (and its file), so R can free it: on R's thread only, as
        releasing an R object is an R call."""
        key = (name, int(version))
        self._cache.pop(key, None)
        path = self._files.pop(key, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def model_file(self, card: dict) -> Path:
        """The verified .rds of a model that ``load`` loaded, as a file (for R workers)."""
        return self._files[(card["name"], int(card["version"]))]

    def _verified(self, blob: str, sha256: str, what: str, name: str) -> bytes:
        data = self.store.read_bytes(self.container, blob)
        digest = sha256_of(data)
        if digest != sha256:
            raise ModelLoadError(
                f"{what}: {blob.rsplit('/', 1)[1]}'s sha256 is {digest}, but its card says {sha256}; "
                "the file was changed or damaged after publishing, so it is not loaded.",
                hint="Publish the model again with `scorer models publish` (versions are immutable).", model=name)
        return data

    def _workdir(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="scorer-models-")
        return self._tmp.name

    def close(self) -> None:
        """Remove the files of the functions loaded (the job ends with os._exit)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- publishing -----------------------------------------------------------------

    def publish(self, path: Path, name: str, opts: Options | None = None) -> Published:
        """Publish ``path`` as the next version of ``name`` (``opts.shadow``: as its shadow,
        scored beside the current version into shadow/, never current until promoted).

        Reads the model in R to build its card (scorer.models.cards). Raises ConfigError
        for a bad name, file or option, ModelLoadError when R cannot read it,
        ModelError when it cannot be scored as it is.
        """
        opts = opts or Options()
        why = check_name(name)
        if why:
            raise ConfigError(f"--name {name!r} is not valid: {why}.", hint="Choose another name.")
        if not path.is_file():
            raise ConfigError(f"{path}: no such file.", hint="Give the path of a model saved with saveRDS(), or of "
                              "an R script that defines score(data, ...).")
        if path.suffix.lower() == ".r":
            return self._publish_function(path, name, opts)
        if opts.params or opts.files:
            raise ConfigError("--param and --with are for R scoring functions (a .R script), not saved models.",
                              hint="Use --predict-arg for a model's predict() arguments.")
        if opts.reference is not None and not opts.reference.is_file():
            raise ConfigError(f"--reference {opts.reference}: no such file.",
                              hint="Give the training data (or a sample of it) as .csv, .csv.gz or .parquet.")
        data = path.read_bytes()
        r = self.r
        before = r.loaded_namespaces()
        model = r.read_model(path, str(path))
        listed = debian_package_list(opts.package_list) if opts.package_list else None
        available = None if listed is None else {p.lower() for p in r.dependencies(sorted(listed))} | listed
        try:
            fields, warnings = describe_model(r, model, before, opts, available)
        except ModelError as exc:
            raise type(exc)(f"{path}: {exc}", hint=exc.hint) from None
        profile, notes = self._profile(model, fields, opts)
        warnings += notes
        card = {
            "name": name,
            "version": None,
            "kind": "model",
            "sha256": sha256_of(data),
            "size_bytes": len(data),
            "r_version": r.r_version,
            **fields,
            "source_file": path.name,
            "published_at": now(),
            "published_by": _user(),
            "scorer_version": __version__,
        }
        extra = {}
        if profile is not None:
            text = json.dumps(profile).encode()
            extra[PROFILE] = text
            card["profile"] = {"sha256": sha256_of(text), "source": profile["source"], "rows": profile["rows"],
                               "prediction_rows": profile["prediction_rows"]}
        else:
            card["profile"] = None
        return self._store_version(name, data, card, warnings, extra=extra, shadow=opts.shadow)

    def _profile(self, model: Any, fields: dict, opts: Options) -> tuple[dict | None, list[str]]:
        """The drift profile (scorer.monitoring.drift) of the reference rows: ``--reference``, else
        the data the model keeps (glm's data, lm's and glm's model frame), else none."""
        spec = PredictSpec.from_card(fields)
        r = self.r
        decimal = "."
        if opts.reference is not None:
            path = opts.reference
            where = f"--reference {path}"
            try:
                fmt = format_of(path.name)
            except InputFormatError as exc:
                raise ConfigError(f"{where}: {exc}", hint=exc.hint) from None
            with open(path, "rb") as fh:
                try:
                    s = self.store.settings
                    table = open_input(path if fmt == "parquet" else fh, fmt, where, s.batch_rows, s.max_input_bytes,
                                       CsvOptions.of(s, path.name, na_kept(spec.schema, s.na_values)))
                    try:
                        check_columns(table.names, spec.schema, where)
                        batches = list(table.batches)
                    finally:
                        table.close()
                except InputError as exc:
                    raise ConfigError(str(exc), hint=exc.hint) from None
            decimal = table.decimal
            source = f"reference file {path.name}"
            data = pa.Table.from_batches(batches) if batches else None
            if data is None or data.num_rows == 0:
                raise ConfigError(f"{where}: the file has no data rows.", hint="Give the training data.")
        else:
            names = [f["name"] for f in fields.get("input_schema") or []]
            kept = r.reference_frame(model, names) if names else None
            if kept is None:
                return None, ["no drift profile: the model keeps no training data; publish with --reference "
                              "TRAIN.csv (the training data or a sample of it) to have drift in the run reports."]
            data, part = kept
            source = "the model's data (glm keeps its data argument)" if part == "data" else \
                "the model frame (lm and glm keep it)"
            absent = [n for n in names if n not in data.column_names]
            if absent:
                return None, [f"no drift profile: {source} lacks {', '.join(map(repr, absent))} (a model frame holds "
                              "transformed terms such as log(x)); publish with --reference TRAIN.csv."]
        try:
            profile, notes = profile_reference(data, spec, model, r, source, decimal, self.store.settings.batch_rows)
        except (PredictError, InputError) as exc:
            if opts.reference is None:  # a profile nobody asked for never refuses a publish (issue 27)
                return None, [f"no drift profile: predict() on {source} failed ({exc}); publish with --reference "
                              "TRAIN.csv to have drift in the run reports."]
            if isinstance(exc, PredictError):
                raise ConfigError(f"predict() failed on {source}, so no drift profile could be made: {exc}",
                                  hint="Check that the reference holds the model's training variables, or leave "
                                  "--reference out.") from None
            raise ConfigError(f"the drift profile of {source} failed: {exc}", hint=exc.hint) from None
        return profile, notes

    def profile(self, card: dict) -> dict | None:
        """The version's drift profile, checksum-verified, or None when it has none."""
        meta = card.get("profile")
        if not meta:
            return None
        key = (card["name"], int(card["version"]))
        if key not in self._profiles:
            what = f"model {card['name']!r} version {card['version']}"
            data = self._verified(f"{card['name']}/v{card['version']}/{PROFILE}", meta["sha256"], what, card["name"])
            self._profiles[key] = json.loads(data)
        return self._profiles[key]

    def _publish_function(self, path: Path, name: str, opts: Options) -> Published:
        """Publish an R script (with the files it reads) as the next version of ``name``."""
        if opts.shadow:
            raise ConfigError("--shadow is for saved models: a shadow's predictions are compared with the current "
                              "version's row by row, and an R function's output rows are its own.",
                              hint="Publish the function as a version of its own, or shadow a saved model.")
        if opts.reference is not None:
            raise ConfigError("--reference profiles a saved model's inputs for drift; an R function has no fixed "
                              "inputs or predictions to compare.", hint="Leave --reference out for a .R script.")
        files = []
        for f in opts.files:
            if not f.is_file():
                raise ConfigError(f"--with {f}: no such file.", hint="Give files the script reads, e.g. a model.")
            if f.name in (path.name, "card.json") or f.name in [x.name for x in files]:
                raise ConfigError(f"--with {f}: a file of that name is published already.", hint="Rename it.")
            files.append(f)
        r = self.r
        with tempfile.TemporaryDirectory(prefix="scorer-publish-") as tmp:  # the script as the job will run it
            for f in [path, *files]:
                (Path(tmp) / f.name).write_bytes(f.read_bytes())
            try:
                script = r.load_script(Path(tmp) / path.name, str(path))
            except ModelLoadError as exc:
                raise ModelError(str(exc), hint=exc.hint) from None
            listed = debian_package_list(opts.package_list) if opts.package_list else None
            available = None if listed is None else {p.lower() for p in r.dependencies(sorted(listed))} | listed
            fields, warnings = describe_function(r, script, opts, available)
        data = path.read_bytes()
        card = {"name": name, "version": None, **fields, "sha256": sha256_of(data), "size_bytes": len(data),
                "r_version": r.r_version, "source_file": path.name,
                "files": [{"name": f.name, "sha256": sha256_of(f.read_bytes()), "size_bytes": f.stat().st_size}
                          for f in files],
                "published_at": now(), "published_by": _user(), "scorer_version": __version__}
        return self._store_version(name, data, card, warnings, {f.name: f.read_bytes() for f in files})

    def _store_version(self, name: str, data: bytes, card: dict, warnings: list[str],
                       files: dict[str, bytes] | None = None, extra: dict[str, bytes] | None = None,
                       shadow: bool = False) -> Published:
        main = "function.R" if card.get("kind") == "function" else "model.rds"
        for _ in range(20):  # another publisher may take a version number first
            version = self._highest_slot(name) + 1
            try:
                self.store.put_bytes(self.container, f"{name}/v{version}/{main}", data, overwrite=False)
            except ResourceExistsError:
                continue
            for fname, content in (files or {}).items():
                self.store.put_bytes(self.container, f"{name}/v{version}/files/{fname}", content, overwrite=False)
            for fname, content in (extra or {}).items():
                self.store.put_bytes(self.container, f"{name}/v{version}/{fname}", content, overwrite=False)
            if shadow:  # marked before its card: never current, not even for a moment
                mark(self, name, version)
            card["version"] = version
            self.store.put_json(self.container, f"{name}/v{version}/card.json", card, overwrite=False)
            return Published(card=card, warnings=warnings)
        raise ModelError(f"Could not find a free version number for {name!r}.", hint="Try again.")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers; the card just omits it
        return None

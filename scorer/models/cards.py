"""What a model card says about a model, and the checks made before publishing it.

``describe_model`` reads a loaded model through the R bridge and returns the
card's fields with the warnings to show the publisher; it raises when the model
cannot be scored as published. The rest is pure: predict arguments written like
R literals (never evaluated), factor levels given on the command line, the one
made-up row a test prediction uses, and the choice of output columns.

Errors: ConfigError for an option that cannot work (an argument the predict()
method does not take, a --levels name the model does not use); ModelError for a
model that cannot be scored as it is (no predict() method, a factor whose levels
no record holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.data.frames import RColumn
from scorer.errors import ConfigError, ModelError, PredictError

#: predict() type used when the publisher gives none, per R class. glm's own default
#: ("link") is rarely what a scoring user wants.
DEFAULT_PREDICT_TYPE = {"glm": "response"}

#: families whose input schema R exposes (the card lists variables, classes, levels)
SCHEMA_FAMILIES = ("lm, glm, loess, nls, gam, rpart, polr, multinom, nnet, lda, qda, coxph, svm, randomForest, "
                   "ranger, gbm, caret's train")

_R_NAME = re.compile(r"^(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass
class Options:
    """What the publisher asked for on the command line."""

    predict_type: str | None = None
    packages: list[str] = field(default_factory=list)
    predict_args: list[str] = field(default_factory=list)     # NAME=VALUE
    levels: list[str] = field(default_factory=list)           # NAME=a,b,c
    output_columns: list[str] | None = None
    package_list: Path | None = None
    params: list[str] = field(default_factory=list)           # NAME=VALUE, for score()
    files: list[Path] = field(default_factory=list)           # published beside a script
    reference: Path | None = None                             # training data, for the drift profile
    text: list[str] = field(default_factory=list)             # columns an R function gets as text
    tz: list[str] = field(default_factory=list)               # NAME=ZONE: a date-time's training time zone
    shadow: bool = False                                      # published as the shadow, not current
    id_column: str | None = None                              # a row's id, for labels (scorer.batch.labels)
    outcome_column: str = "outcome"                           # the outcome's column in label files


def parse_predict_arg(text: str) -> dict:
    """``NAME=VALUE`` as a typed predict() argument, read like an R literal and
    never evaluated: ``200`` is a double, ``200L`` an integer, ``TRUE``/``FALSE``
    (``T``/``F``) a logical, ``NA`` a logical NA (``re.form=NA``), ``NULL`` nothing,
    ``"x"`` or ``'x'`` text, ``c(0.1, 0.5, 0.9)`` a vector of such values (all of one
    type), and any other value text as written. Raises ConfigError naming the option."""
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not _R_NAME.match(name):
        raise ConfigError(f"--predict-arg {text!r} is not NAME=VALUE with an R argument name.",
                          hint="For example --predict-arg n.trees=200 or --predict-arg s=lambda.min.")
    vector = re.fullmatch(r"c\((.*)\)", value, re.S)
    if vector:
        items = [_literal(v.strip()) for v in _split_items(vector.group(1))] if vector.group(1).strip() else []
        kinds = {t for t, _ in items if t != "NA"}
        if len(kinds) > 1 or not items:
            raise ConfigError(f"--predict-arg {text!r}: a vector must hold at least one value, all of one type "
                              "(numbers, TRUE/FALSE or text).", hint="For example --predict-arg p=c(0.1,0.5,0.9).")
        kind = kinds.pop() if kinds else "logical"
        return {"name": name, "type": kind, "value": [v for _, v in items]}
    kind, literal = _literal(value)
    if kind == "NA":
        return {"name": name, "type": "logical", "value": None}
    return {"name": name, "type": kind, "value": literal}


def _literal(value: str) -> tuple[str, Any]:
    """One R literal as (type, value); NA as ("NA", None); anything else is text."""
    if re.fullmatch(r"[+-]?\d+L", value):
        return "integer", int(value[:-1])
    if _NUMBER.match(value):
        return "double", float(value)
    if value in ("TRUE", "T", "FALSE", "F"):
        return "logical", value in ("TRUE", "T")
    if value == "NA":
        return "NA", None
    if value == "NULL":
        return "NULL", None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return "character", value


def _split_items(text: str) -> list[str]:
    """The items of ``c(...)``, split at commas outside quotes."""
    items, current, quote = [], "", None
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current)
            current = ""
        else:
            current += ch
    return items + [current]


def parse_param(text: str) -> dict:
    """``NAME=VALUE`` for an R function's ``score(data, NAME = VALUE)``: numbers as
    numbers, TRUE/FALSE as logicals, anything else as text (never evaluated).
    Raises ConfigError naming the option."""
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not _R_NAME.match(name):
        raise ConfigError(f"--param {text!r} is not NAME=VALUE with an R argument name.",
                          hint="For example --param horizon=28 or --param seasonal=FALSE.")
    if _NUMBER.match(value):
        return {"name": name, "type": "double", "value": float(value)}
    if value in ("TRUE", "FALSE"):
        return {"name": name, "type": "logical", "value": value == "TRUE"}
    return {"name": name, "type": "character", "value": value}


def describe_function(r: Any, script: Any, opts: Options, available: set[str] | None) -> tuple[dict, list[str]]:
    """The card's fields for an R scoring function (a LoadedScript) and the warnings.
    Raises ConfigError for a --param that score() does not take."""
    warnings: list[str] = []
    params = [parse_param(p) for p in opts.params]
    if "..." not in script.args:
        stray = [p["name"] for p in params if p["name"] not in script.args[1:]]
        if stray:
            raise ConfigError(f"--param {', '.join(stray)}: score() takes no argument of that name (its arguments: "
                              f"{', '.join(script.args)}).", hint="Name one of score()'s arguments after data.")
    versions = r.package_versions(script.packages)
    missing = [p for p, v in versions.items() if v is None]
    if missing:
        warnings.append(f"R package(s) {', '.join(missing)}, which the script uses, are not installed here.")
    base = {"base", "stats", "utils", "methods", "graphics", "grDevices", "datasets", "splines", "tools",
            "parallel", "stats4", "grid", "tcltk", "compiler"}
    needed = [p for p in script.packages if p not in base]
    _check_image_packages(needed, available, opts, warnings, "the script uses")
    return {"kind": "function", "packages": {p: versions[p] for p in needed}, "top_packages": needed,
            "params": params, "arguments": script.args, "text_columns": list(opts.text),
            "outcome": outcome_spec([], None, None, opts)}, warnings


def parse_levels(texts: list[str]) -> dict[str, list[str]]:
    """``NAME=a,b,c`` options as {name: levels}. Raises ConfigError."""
    out = {}
    for text in texts:
        name, eq, value = text.partition("=")
        levels = [v for v in value.split(",") if v != ""] if eq else []
        if not eq or not name.strip() or not levels:
            raise ConfigError(f"--levels {text!r} is not NAME=LEVEL1,LEVEL2,...",
                              hint="Give the training factor's levels in their order, e.g. --levels size=low,mid,high.")
        out[name.strip()] = levels
    return out


def prototype(schema: list[dict], rows: int = 1) -> dict[str, RColumn]:
    """Made-up rows in the schema's types, for a test prediction at publish: the first
    is 1 for numbers, the first level of a factor, TRUE, 2020-01-01; each next row takes
    the next value (2, the second level, FALSE, 2020-01-02, ...)."""
    k = np.arange(rows)
    cols = {}
    for f in schema:
        cls = f["class"]
        if f.get("levels"):
            codes = (k % len(f["levels"]) + 1).astype(np.int32)
            cols[f["name"]] = RColumn("factor", codes, f["levels"], ordered=cls == "ordered")
        elif cls == "logical":
            cols[f["name"]] = RColumn("logical", ((k + 1) % 2).astype(np.int32))
        elif cls == "Date":
            cols[f["name"]] = RColumn("date", 18262.0 + k)
        elif cls == "POSIXct":
            cols[f["name"]] = RColumn("posixct", 1577836800.0 + 3600.0 * k, tz=f.get("tz") or "UTC")
        elif cls == "character":
            cols[f["name"]] = RColumn("character", [chr(ord("a") + int(i) % 26) for i in k])
        else:
            cols[f["name"]] = RColumn("numeric", 1.0 + k)
    return cols


def rows_together(r: Any, model: Any, schema: list[dict], predict_type: str | None, args: list[dict]
                  ) -> tuple[bool, bool, str | None, bool]:
    """Whether a row's prediction depends on that row alone, decided by test predictions
    of 30 made-up rows: together, then one at a time. A formula term computed over the
    rows predict() is given (I(x - mean(x))) makes R's answer depend on the whole call,
    which scorer would cut into batches and gather from requests. Also whether predict()
    is random (the same rows twice give different answers: ranger's standard errors);
    a random one is compared with R's seed set before each call. And whether predict()
    answers in the order it was given the rows: the made-up rows backwards must come back
    backwards (prophet's predict() sorts its rows by ds; scorer pairs the k-th prediction
    with the k-th row). Returns (rowwise, random, reason, checked): rowwise (not checked)
    when a test prediction fails, as there is nothing to compare; only a checked model's
    calls are ever gathered (scorer.r.door, scorer serve)."""
    def predict(cols: dict[str, RColumn], n: int, seed: int | None) -> list[np.ndarray]:
        results, _ = r.predict(model, cols, n, predict_type, args, seed)
        return [np.asarray(a.to_numpy(zero_copy_only=False)) for _, a in results]

    rows = 30  # more than a few: some methods change what they do past 20 rows (ranger's calibration)
    cols = prototype(schema, rows)
    try:
        together = predict(cols, rows, None)
        random = not _same(together, predict(cols, rows, None))
        seed = 1 if random else None
        if random:
            together = predict(cols, rows, seed)
        alone = [predict({n: c.take_rows(np.array([i])) for n, c in cols.items()}, 1, seed) for i in range(rows)]
        backwards = predict({n: c.take_rows(np.arange(rows)[::-1]) for n, c in cols.items()}, rows, seed)
    except PredictError:
        return True, False, None, False
    if not _same(together, [b[::-1] for b in backwards]):
        return False, random, ("predict() does not answer in the order it is given the rows (made-up rows given "
                               "backwards did not come back backwards: prophet's predict() sorts them by ds), and "
                               "scorer pairs the k-th prediction with the k-th row: an input must come in the order "
                               "predict() puts its rows in (prophet: ds ascending), or be scored by an R function "
                               "that keeps its order"), True
    joined = [np.concatenate([a[j] for a in alone]) for j in range(len(together))]
    if _same(together, joined):
        return True, random, None, True
    return False, random, ("its predictions depend on the other rows predicted with them (made-up rows predicted "
                           "together and one at a time differ): a formula term computed over the rows, such as "
                           "I(x - mean(x)) or scale(x) fitted without its training centre, or a method that "
                           "calibrates over them"), True


def _same(a: list[np.ndarray], b: list[np.ndarray], rel: float = 1e-9) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            if not np.allclose(x.astype(float), y.astype(float), rtol=rel, atol=1e-12, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


_SVM_PROBABILITIES = (" (for class probabilities from an svm: fit it with probability = TRUE and publish with "
                      "--predict-arg probability=TRUE)")

#: saved models that forecast (from a horizon or new x values) rather than predict rows of
#: input variables: what they predict from, and an R function that scores a file with them
FORECASTS = {
    "smooth.spline": ("new x values (predict(fit, x = ...))",
                      "score <- function(data) data.frame(x = data$x, prediction = predict(fit, x = data$x)$y)"),
    "Arima": ("a forecast horizon (predict(fit, n.ahead = h))",
              "score <- function(data, horizon = 28) data.frame(step = seq_len(horizon), prediction = "
              "as.numeric(predict(fit, n.ahead = horizon)$pred))"),
    "ARIMA": ("a forecast horizon (forecast(fit, h = h))",
              "score <- function(data, horizon = 28) as.data.frame(forecast::forecast(fit, h = horizon))"),
    "ets": ("a forecast horizon (forecast(fit, h = h))",
            "score <- function(data, horizon = 28) as.data.frame(forecast::forecast(fit, h = horizon))"),
    "HoltWinters": ("a forecast horizon (predict(fit, n.ahead = h))",
                    "score <- function(data, horizon = 28) data.frame(step = seq_len(horizon), prediction = "
                    "as.numeric(predict(fit, n.ahead = horizon)))"),
    "StructTS": ("a forecast horizon (predict(fit, n.ahead = h))",
                 "score <- function(data, horizon = 28) data.frame(step = seq_len(horizon), prediction = "
                 "as.numeric(predict(fit, n.ahead = horizon)$pred))"),
}


def _valid_zone(zone: str) -> bool:
    """Whether ``zone`` is a time zone Arrow (and so R's tz database) knows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.assume_timezone(pa.array([0], pa.timestamp("s")), zone)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return False


def _loosen_grouping(schema: list[dict], args: list[dict]) -> None:
    """A mixed model's grouping factor, predicted with allow.new.levels = TRUE (a level the
    model never saw gets the population-level prediction) or re.form = NA (no random
    effects): any value is scored, so it is sent as text, unchecked against the levels."""
    loose = any((a["name"] == "allow.new.levels" and a["value"] is True)
                or (a["name"] in ("re.form", "REform") and a["type"] in ("logical", "NULL") and a["value"] is None)
                for a in args)
    if loose:
        for f in schema:
            if f.get("grouping"):
                f["class"], f["levels"] = "character", None


def _check_used(r: Any, model: Any, schema: list[dict], predict_type: str | None, args: list[dict],
                unnamed: list[str], results: list, method: str, r_class: list[str]) -> None:
    """Refuse an argument the predict() method does not name and silently ignored: its
    ``...`` took it, and the test prediction is the same without it (svm's type = "prob",
    loess's type). One it used (partykit's type = "prob", passed on) is kept."""
    for name in unnamed:
        without = [a for a in args if a["name"] != name]
        try:
            plain, _ = r.predict(model, prototype(schema), 1, None if name == "type" else predict_type, without)
        except PredictError:
            continue  # it needs the argument: it uses it
        if [n for n, _ in plain] == [n for n, _ in results] and all(
                a.equals(b) for (_, a), (_, b) in zip(plain, results)):
            what = f"--predict-type {predict_type}" if name == "type" else f"--predict-arg {name}"
            raise ConfigError(
                f"{what}: {method}() has no {name} argument, and the one it was given went unused (its ... took it, "
                "and a test prediction is the same without it).",
                hint="Leave it out, or use an argument the method names"
                + (_SVM_PROBABILITIES if "svm" in r_class and name == "type" else "") + ".")


def describe_model(r: Any, model: Any, loaded_before: list[str], opts: Options,
                   available: set[str] | None) -> tuple[dict, list[str]]:
    """The card's fields for ``model`` (a LoadedModel) and the warnings to show.

    ``available`` is the set of R packages the scoring image has (docker/r-packages.txt
    and their dependencies, lower case), or None when unknown. Raises ModelError
    or ConfigError (see the module's docstring).
    """
    warnings: list[str] = []
    desc = r.describe(model, loaded_before)
    needed = list(dict.fromkeys(list(desc["packages"]) + list(opts.packages)))
    missing = r.missing_packages(needed)  # loads the namespaces, which registers their methods
    packages = r.package_versions(needed)  # versions of what was loaded just now
    top = list(dict.fromkeys(desc["top_packages"] + list(opts.packages)))
    formals = None if missing else r.predict_formals(model)
    if not missing:
        r.attach(desc["attach"])  # ns() from splines: the test predictions below call the formula, as the job does
    _refuse_unscorable(model, formals, missing, warnings)
    schema = desc["input_schema"]
    _refuse_matrices(schema)
    _given_levels_and_zones(schema, opts)
    _check_schema(schema, warnings)
    args = [parse_predict_arg(a) for a in opts.predict_args]
    predict_type = opts.predict_type
    unnamed = _unnamed_arguments(formals, args, predict_type, model)
    if predict_type is None:
        predict_type = next((DEFAULT_PREDICT_TYPE[c] for c in model.r_class if c in DEFAULT_PREDICT_TYPE), None)
    if schema:
        _loosen_grouping(schema, args)
        if "coxph" in model.r_class and predict_type in ("expected", "survival"):  # they need the outcome too
            have = {f["name"] for f in schema}
            schema += [{"name": v, "class": "numeric", "levels": None} for v in r.response_variables(model)
                       if v not in have]
    prediction_columns, rowwise, random, checked, results = _test_predictions(
        r, model, schema, predict_type, args, unnamed, formals, warnings)
    outputs = opts.output_columns
    _check_outputs(outputs, prediction_columns)
    known = formals is not None and not missing
    outcome = outcome_spec([(n, a) for n, a in results if not outputs or n in outputs],
                           r.binary_classes(model) if known else None, r.class_levels(model) if known else None, opts)
    _check_image_packages(top, available, opts, warnings)
    return {
        "r_class": model.r_class,
        "packages": packages,
        "top_packages": top,
        "attach": desc["attach"],
        "predict_type": predict_type,
        "predict_args": args,
        "output_columns": outputs,
        "prediction_columns": prediction_columns,
        "input_schema": schema,
        "rowwise": rowwise,
        # rowwise by test predictions, the order of the rows included: only then are calls gathered
        "rowwise_checked": checked,
        "random": random,
        "outcome": outcome,
    }, warnings


def _refuse_unscorable(model: Any, formals: dict | None, missing: list[str], warnings: list[str]) -> None:
    """Models scorer cannot score as saved, refused with the way that works."""
    if missing:
        warnings.append(f"R package(s) {', '.join(missing)} are not installed here, so the model could not be "
                        "checked for a predict() method or test-scored.")
    elif formals is None:
        raise ModelError(
            f"an object of class {'/'.join(model.r_class)} has no predict() method in any installed R package, "
            "so it cannot be scored.",
            hint="Save the fitted model itself (e.g. saveRDS(fit, 'model.rds')); install the package that "
            "provides its predict() method; or score it with an R function (scorer models publish FILE.R).")
    forecast = [c for c in model.r_class if c in FORECASTS]
    if forecast:
        raise ModelError(
            f"a {forecast[0]} model predicts from {FORECASTS[forecast[0]][0]}, not from rows of input variables, so "
            "it cannot be scored as a saved model.",
            hint="Publish an R function that scores a file with it (scorer models publish score.R --with model.rds), "
            f"e.g. score.R holding:  fit <- readRDS('model.rds');  {FORECASTS[forecast[0]][1]}  (docs/models.md, R "
            "functions).")
    if "glmnet" in model.r_class or "cv.glmnet" in model.r_class:
        raise ModelError(
            "glmnet models predict from a numeric matrix (newx) built the way the model was fitted, which the "
            "model does not record, and need s = a lambda.",
            hint="Publish an R scoring function instead, e.g. a file glmnet_score.R with "
            "fit <- readRDS('model.rds') and score <- function(data) data.frame(prediction = as.vector(predict(fit, "
            "newx = as.matrix(data[, rownames(fit$glmnet.fit$beta)]), s = 'lambda.min'))); see docs/models.md.")


def _refuse_matrices(schema: list[dict] | None) -> None:
    matrices = [f["name"] for f in schema or [] if f["class"] == "matrix"]
    if matrices:
        raise ModelError(f"the model takes {', '.join(map(repr, matrices))} as a matrix of columns (I(matrix) in the "
                         "training data frame), which rows of a file cannot hold as R held it.",
                         hint="Fit the model on the matrix's columns as variables of their own, or publish an R "
                         "function that builds the matrix from the file's columns and calls predict().")


def _given_levels_and_zones(schema: list[dict] | None, opts: Options) -> None:
    """--levels and --tz into the schema, where the model records none of its own."""
    given = parse_levels(opts.levels)
    if given:
        known = {f["name"]: f for f in schema or []}
        stray = [n for n in given if n not in known]
        if stray:
            raise ConfigError(f"--levels names {', '.join(map(repr, stray))}, which the model does not use "
                              f"(its inputs: {', '.join(known) or 'none recorded'}).",
                              hint="Give --levels only for the model's own input variables.")
        for n, lv in given.items():
            f = known[n]
            if f.get("levels") and f["levels"] != lv:
                raise ConfigError(f"--levels {n}=... differs from the levels the model itself records "
                                  f"({', '.join(f['levels'])}).",
                                  hint="Leave --levels out for this variable: the model's own record is used.")
            f["levels"] = lv
            if f["class"] in ("unknown", "any"):
                f["class"] = "factor"
    for text in opts.tz:
        name, eq, zone = text.partition("=")
        field_ = next((f for f in schema or [] if f["name"] == name.strip()), None)
        if not eq or field_ is None or not _valid_zone(zone.strip()):
            raise ConfigError(f"--tz {text!r} is not NAME=ZONE for one of the model's inputs with a time zone R "
                              f"knows (inputs: {', '.join(f['name'] for f in schema or []) or 'none recorded'}).",
                              hint="For example --tz ts=America/New_York (an IANA time zone name).")
        if field_.get("tz") not in (None, "UTC", zone.strip()) and field_["class"] == "POSIXct":
            raise ConfigError(f"--tz {text!r}: the model itself records {field_['tz']} for {name!r}.",
                              hint="Leave --tz out for this input: the model's own record is used.")
        field_["class"], field_["tz"] = "POSIXct", zone.strip()


def _check_schema(schema: list[dict] | None, warnings: list[str]) -> None:
    """Factors without levels refused; levels spelled like a missing value, inputs of
    unknown type and a model without a schema said."""
    if schema:
        unlevelled = [f["name"] for f in schema if f["class"] in ("factor", "ordered") and not f.get("levels")]
        if unlevelled:
            raise ModelError(
                f"the model was trained with {', '.join(map(repr, unlevelled))} as factor(s), but keeps no record "
                "of their levels, so text in those columns could not be coded the way the model expects "
                "(R would code it alphabetically and score wrong, without an error).",
                hint="Publish again with --levels NAME=LEVEL1,LEVEL2,... (the training factor's levels, in order) "
                "for each: " + ", ".join(unlevelled) + ".")
        spelled = {f["name"]: t for f in schema for t in f.get("levels") or [] if t in ("NA", "")}
        for n, t in spelled.items():
            warnings.append(f"{n!r} has a level {t!r}, which CSV readers take for a missing value: scorer reads {t!r} "
                            f"in {n!r} as that level (R's read.csv would read it as NA), and as a missing value in "
                            "other columns (SCORER_NA_VALUES).")
        unknown = [f["name"] for f in schema if f["class"] == "unknown"]
        if unknown:
            warnings.append(
                f"the model keeps only the names of {', '.join(map(repr, unknown))}, not their types: numbers are "
                "sent as numbers, and an input with text there is refused (a factor coded without its training "
                "levels scores wrong). If one was a factor, publish with --levels NAME=... (ranger records "
                "levels itself when fitted with respect.unordered.factors = \"order\").")
    else:
        warnings.append(
            "R exposes no input schema for this model: every column of an input is sent to predict(), typed by "
            "inference (numbers, ISO dates and date-times, else text), and no column is checked. Families with a "
            f"schema: {SCHEMA_FAMILIES}.")


def _unnamed_arguments(formals: dict | None, args: list[dict], predict_type: str | None, model: Any) -> list[str]:
    """The arguments predict()'s method does not name, which its ... takes (a test
    prediction decides); an argument a method without ... does not take is refused."""
    unnamed: list[str] = []  # arguments the method does not name, which its ... takes: a test prediction decides
    if formals is not None:
        takes = set(formals["names"])
        for a in args:
            if a["name"] not in takes:
                if "..." not in takes:
                    raise ConfigError(
                        f"--predict-arg {a['name']}: {formals['method']}() takes no argument {a['name']!r}.",
                        hint=f"Its arguments: {', '.join(n for n in formals['names'] if n != '...')}.")
                unnamed.append(a["name"])
        if predict_type is not None and "type" not in takes:
            if "..." not in takes:
                raise ConfigError(
                    f"--predict-type {predict_type}: {formals['method']}() takes no type argument.",
                    hint=f"Its arguments: {', '.join(n for n in formals['names'] if n != '...')}"
                    + (_SVM_PROBABILITIES if "svm" in model.r_class else "") + ".")
            unnamed.append("type")
        if predict_type is not None and formals["type_choices"] and predict_type not in formals["type_choices"]:
            raise ConfigError(f"--predict-type {predict_type}: {formals['method']}() accepts type "
                              f"{', '.join(formals['type_choices'])}.", hint="Choose one of those.")
    return unnamed


def _test_predictions(r: Any, model: Any, schema: list[dict] | None, predict_type: str | None, args: list[dict],
                      unnamed: list[str], formals: dict | None, warnings: list[str]
                      ) -> tuple[list[str] | None, bool, bool, bool, list]:
    """Predictions on made-up rows: the result's columns, whether the arguments are used,
    whether rows are predicted alike alone and together, and whether predict() draws.
    Returns (prediction columns or None, rowwise, random, whether rowwise was checked,
    the test prediction's (name, values) pairs)."""
    prediction_columns, results = None, []
    rowwise, random, checked = True, False, False
    if formals is not None and schema:
        try:
            results, _ = r.predict(model, prototype(schema), 1, predict_type, args)
            prediction_columns = [n for n, _ in results]
        except PredictError as exc:
            if "unused argument" in str(exc):
                raise ConfigError(f"a test prediction refused an argument: {exc}",
                                  hint="Remove the --predict-arg or --predict-type it names.") from None
            if unnamed:  # nothing to tell whether the method's ... uses them
                raise ConfigError(f"{formals['method']}() names no argument {', '.join(map(repr, unnamed))}, and a "
                                  f"test prediction, which would show whether its ... uses it, failed: {exc}",
                                  hint="Leave it out, or use an argument the method names.") from None
            warnings.append(f"a test prediction on one made-up row failed (scoring real rows may still work): {exc}")
        else:
            _check_used(r, model, schema, predict_type, args, unnamed, results, formals["method"], model.r_class)
            rowwise, random, why, checked = rows_together(r, model, schema, predict_type, args)
            if not rowwise:
                warnings.append(f"{why}. So each input file is predicted in one call, as R would predict it whole "
                                "(at most SCORER_MAX_FUNCTION_BYTES once read), and each HTTP request alone: a row's "
                                "prediction depends on the file or request it comes in.")
            if random:
                warnings.append("predict() draws random numbers: R's seed is set from each input's name before "
                                "it, so that a file scored again is scored the same (R itself differs run to run).")
    return prediction_columns, rowwise, random, checked, results


def _check_outputs(outputs: list[str] | None, prediction_columns: list[str] | None) -> None:
    if outputs and prediction_columns is not None:
        absent = [c for c in outputs if c not in prediction_columns]
        if absent:
            raise ConfigError(f"--output-columns names {', '.join(map(repr, absent))}, which predict() does not "
                              f"return (it returns {', '.join(map(repr, prediction_columns))}).",
                              hint="Name columns of the result, without the prediction_ prefix.")


def _check_image_packages(packages: list[str], available: set[str] | None, opts: Options, warnings: list[str],
                          who: str = "the model needs") -> None:
    """A warning for R packages the scoring image will not have (``available``: what it
    has, or None when unknown)."""
    if available is None:
        return
    absent = sorted(p for p in packages if p.lower() not in available)
    if absent:
        warnings.append(
            f"{who} R package(s) {', '.join(absent)}, which {opts.package_list} does not list (nor anything there "
            "depends on), so the scoring image will not have them: add "
            + ", ".join(f"r-cran-{p.lower()}" for p in absent)
            + " there (or build with scripts/build-image --r-packages), then rebuild the image.")


def outcome_spec(results: list[tuple[str, Any]], binary: list[str] | None, levels: list[str] | None,
                 opts: Options) -> dict:
    """How labels are matched to this model's predictions and scored (scorer.batch.labels,
    scorer.monitoring.quality), from the test prediction's columns (``results``: raw
    names, values) and ``binary`` (the two classes of a model whose single number is the
    second one's probability: glm binomial, gbm bernoulli; else None) and ``levels`` (a
    classifier's classes, where its family keeps them; else those the test rows got):

    - a column of classes (a factor): ``kind`` class, that column the predicted class, and
      each class's probability column when the result has one (named the class, or ending
      in _<class>: lda's posterior_<class>);
    - several number columns that sum to 1 on the test rows: class probabilities, named by
      class (multinom type=probs, randomForest type=prob);
    - one number column of a ``binary`` model: the positive class's probability;
    - else ``kind`` number, the column named fit (intervals) or the first.

    An R function's result is unknown at publish (``kind`` None): its output's
    ``prediction`` column decides when labels arrive. Columns are the raw names the card
    lists (an output names them prediction_<name>)."""
    spec: dict[str, Any] = {"id_column": opts.id_column, "column": opts.outcome_column, "kind": None,
                            "classes": None, "label": None, "probabilities": None, "score": None}
    if not results:
        return spec
    texts = [(n, a) for n, a in results if _is_text(a)]
    numeric = [(n, a) for n, a in results if pa.types.is_integer(a.type) or pa.types.is_floating(a.type)]
    numbers = [n for n, _ in numeric]
    if texts:
        name, values = texts[0]
        classes = levels or _levels(values)
        spec.update(kind="class", label=name, classes=classes)
        probs = {c: _class_column(c, numbers) for c in classes}
        if classes and all(probs.values()):
            spec["probabilities"] = probs
        return spec
    if not numbers:  # dates, logicals: nothing to score labels against
        return spec
    rows = np.column_stack([np.asarray(a.to_numpy(zero_copy_only=False), dtype=float) for _, a in numeric])
    if len(numbers) >= 2 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-6):
        return dict(spec, kind="class", classes=numbers, probabilities={n: n for n in numbers})
    if len(numbers) == 1 and binary:
        return dict(spec, kind="class", classes=list(binary), probabilities={binary[1]: numbers[0]},
                    score=numbers[0])
    return dict(spec, kind="number", score="fit" if "fit" in numbers else numbers[0])


def _is_text(values: Any) -> bool:
    return pa.types.is_dictionary(values.type) or pa.types.is_string(values.type) or pa.types.is_large_string(
        values.type)


def _levels(values: Any) -> list[str]:
    if pa.types.is_dictionary(values.type):
        return [str(x) for x in values.dictionary.to_pylist()]
    return sorted({str(x) for x in values.to_pylist() if x is not None})


def _class_column(cls: str, numbers: list[str]) -> str | None:
    named = [n for n in numbers if n == cls or n.endswith(f"_{cls}")]
    return named[0] if len(named) == 1 else None

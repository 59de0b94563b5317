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

from scorer.errors import ConfigError, ModelError, PredictError
from scorer.frames import RColumn

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


def parse_predict_arg(text: str) -> dict:
    """``NAME=VALUE`` as a typed predict() argument, read like an R literal and
    never evaluated: ``200`` is a double, ``200L`` an integer, ``TRUE``/``FALSE``
    (``T``/``F``) a logical, ``NULL`` nothing, ``"x"`` or ``'x'`` text, and any
    other value text as written. Raises ConfigError naming the option."""
    name, eq, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not eq or not _R_NAME.match(name):
        raise ConfigError(f"--predict-arg {text!r} is not NAME=VALUE with an R argument name.",
                          hint="For example --predict-arg n.trees=200 or --predict-arg s=lambda.min.")
    if re.fullmatch(r"[+-]?\d+L", value):
        return {"name": name, "type": "integer", "value": int(value[:-1])}
    if _NUMBER.match(value):
        return {"name": name, "type": "double", "value": float(value)}
    if value in ("TRUE", "T", "FALSE", "F"):
        return {"name": name, "type": "logical", "value": value in ("TRUE", "T")}
    if value == "NULL":
        return {"name": name, "type": "NULL", "value": None}
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return {"name": name, "type": "character", "value": value}


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
    if available is not None:
        absent = sorted(p for p in needed if p.lower() not in available)
        if absent:
            warnings.append(
                f"the script uses R package(s) {', '.join(absent)}, which {opts.package_list} does not list (nor "
                "anything there depends on), so the scoring image will not have them: add "
                + ", ".join(f"r-cran-{p.lower()}" for p in absent)
                + " there (or build with scripts/build-image --r-packages), then rebuild the image.")
    return {"kind": "function", "packages": {p: versions[p] for p in needed}, "top_packages": needed,
            "params": params, "arguments": script.args}, warnings


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


def prototype(schema: list[dict]) -> dict[str, RColumn]:
    """One made-up row in the schema's types, for a test prediction at publish:
    1 for numbers, the first level of a factor, TRUE, 2020-01-01."""
    cols = {}
    for f in schema:
        cls = f["class"]
        if f.get("levels"):
            cols[f["name"]] = RColumn("factor", np.array([1], np.int32), f["levels"], ordered=cls == "ordered")
        elif cls == "logical":
            cols[f["name"]] = RColumn("logical", np.array([1], np.int32))
        elif cls == "Date":
            cols[f["name"]] = RColumn("date", np.array([18262.0]))
        elif cls == "POSIXct":
            cols[f["name"]] = RColumn("posixct", np.array([1577836800.0]), tz=f.get("tz") or "UTC")
        elif cls == "character":
            cols[f["name"]] = RColumn("character", ["a"])
        else:
            cols[f["name"]] = RColumn("numeric", np.array([1.0]))
    return cols


def select_outputs(results: list[tuple[str, Any]], wanted: list[str] | None) -> list[tuple[str, Any]]:
    """The named columns of a predict() result, in the order asked for (all of
    them when ``wanted`` is None). Raises PredictError naming what is missing."""
    if not wanted:
        return results
    by_name = {n: a for n, a in results}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise PredictError(f"predict() returned no column(s) {', '.join(map(repr, missing))}; it returned "
                           f"{', '.join(repr(n) for n in by_name) or 'one unnamed vector'}.",
                           hint="Publish again with --output-columns naming columns the result has.")
    return [(w, by_name[w]) for w in wanted]


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
    if missing:
        warnings.append(f"R package(s) {', '.join(missing)} are not installed here, so the model could not be "
                        "checked for a predict() method or test-scored.")
    elif formals is None:
        raise ModelError(
            f"an object of class {'/'.join(model.r_class)} has no predict() method in any installed R package, "
            "so it cannot be scored.",
            hint="Save the fitted model itself (e.g. saveRDS(fit, 'model.rds')); install the package that "
            "provides its predict() method; or score it with an R function (scorer models publish FILE.R).")
    if "glmnet" in model.r_class or "cv.glmnet" in model.r_class:
        raise ModelError(
            "glmnet models predict from a numeric matrix (newx) built the way the model was fitted, which the "
            "model does not record, and need s = a lambda.",
            hint="Publish an R scoring function instead, e.g. a file glmnet_score.R with "
            "fit <- readRDS('model.rds') and score <- function(data) data.frame(prediction = as.vector(predict(fit, "
            "newx = as.matrix(data[, rownames(fit$glmnet.fit$beta)]), s = 'lambda.min'))); see docs/models.md.")
    schema = desc["input_schema"]
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
    if schema:
        unlevelled = [f["name"] for f in schema if f["class"] in ("factor", "ordered") and not f.get("levels")]
        if unlevelled:
            raise ModelError(
                f"the model was trained with {', '.join(map(repr, unlevelled))} as factor(s), but keeps no record "
                "of their levels, so text in those columns could not be coded the way the model expects "
                "(R would code it alphabetically and score wrong, without an error).",
                hint="Publish again with --levels NAME=LEVEL1,LEVEL2,... (the training factor's levels, in order) "
                "for each: " + ", ".join(unlevelled) + ".")
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
    args = [parse_predict_arg(a) for a in opts.predict_args]
    predict_type = opts.predict_type
    if formals is not None:
        takes = set(formals["names"])
        for a in args:
            if a["name"] not in takes:
                raise ConfigError(
                    f"--predict-arg {a['name']}: {formals['method']}() takes no argument {a['name']!r}.",
                    hint=f"Its arguments: {', '.join(n for n in formals['names'] if n != '...')}.")
        if predict_type is not None and "type" not in takes:
            raise ConfigError(
                f"--predict-type {predict_type}: {formals['method']}() takes no type argument.",
                hint=f"Its arguments: {', '.join(n for n in formals['names'] if n != '...')}"
                + (" (for class probabilities from an svm: fit it with probability = TRUE and publish with "
                   "--predict-arg probability=TRUE)" if "svm" in model.r_class else "") + ".")
        if predict_type is not None and formals["type_choices"] and predict_type not in formals["type_choices"]:
            raise ConfigError(f"--predict-type {predict_type}: {formals['method']}() accepts type "
                              f"{', '.join(formals['type_choices'])}.", hint="Choose one of those.")
    if predict_type is None:
        predict_type = next((DEFAULT_PREDICT_TYPE[c] for c in model.r_class if c in DEFAULT_PREDICT_TYPE), None)
    prediction_columns = None
    if formals is not None and schema:
        try:
            results, _ = r.predict(model, prototype(schema), 1, predict_type, args)
            prediction_columns = [n for n, _ in results]
        except PredictError as exc:
            if "unused argument" in str(exc):
                raise ConfigError(f"a test prediction refused an argument: {exc}",
                                  hint="Remove the --predict-arg or --predict-type it names.") from None
            warnings.append(f"a test prediction on one made-up row failed (scoring real rows may still work): {exc}")
    outputs = opts.output_columns
    if outputs and prediction_columns is not None:
        absent = [c for c in outputs if c not in prediction_columns]
        if absent:
            raise ConfigError(f"--output-columns names {', '.join(map(repr, absent))}, which predict() does not "
                              f"return (it returns {', '.join(map(repr, prediction_columns))}).",
                              hint="Name columns of the result, without the prediction_ prefix.")
    if available is not None:
        absent_pkgs = sorted(p for p in top if p.lower() not in available)
        if absent_pkgs:
            warnings.append(
                f"the model needs R package(s) {', '.join(absent_pkgs)}, which {opts.package_list} does not list "
                "(nor anything there depends on), so the scoring image will not have them: add "
                + ", ".join(f"r-cran-{p.lower()}" for p in absent_pkgs)
                + " there (or build with scripts/build-image --r-packages), then rebuild the image.")
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
    }, warnings

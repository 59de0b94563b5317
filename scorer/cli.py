"""The command line: a thin layer over scorer's modules.

    scorer run [--model NAME] [--blob NAME]           score pending inputs, then exit
    scorer models publish MODEL.rds --name NAME       publish a new, immutable version
    scorer models list | show NAME                    what is published
    scorer runs | report [RUN_ID] [--html FILE]       past runs, from their reports
    scorer serve [--host H] [--port P]                the published models over HTTP
    scorer local [--once]                             the local twin of the Logic App
    scorer azure                                      the local Azure that `deploy.py --local` deploys into

Errors scorer raises on purpose are printed as a message and what to do, with the
exit status from scorer.errors; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

_STARTED = time.monotonic()  # for the cold-start figure logged at the first scored row

# NumPy's bundled OpenBLAS starts a thread per core when NumPy loads, and those
# threads took CPU from the job's own (2% of its samples) though scorer does no
# linear algebra in NumPy. R links its own BLAS; Debian's default is single-threaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from scorer import __version__, errors  # noqa: E402
from scorer.errors import ScorerError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE_LIST = REPO_ROOT / "docker" / "r-packages.txt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scorer",
        description="Batch scoring of saved R models on Azure Blob Storage. Settings come from "
        "environment variables (see docs/running.md); flags override them.")
    p.add_argument("--version", action="version", version=f"scorer {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and R's console output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="score all pending inputs (or one model's, or one blob) and exit",
                         description="Claim pending inputs, score them with their model, commit outputs, "
                         "archive or quarantine inputs, write the run report, and exit with its status: "
                         "0 all scored, 2 bad settings, 3 inputs quarantined, 4 storage failed, 1 internal error.")
    run.add_argument("--model", help="score only inputs under input/MODEL/ (SCORER_MODEL)")
    run.add_argument("--blob", help="score only this input blob, e.g. glm/day.csv (SCORER_BLOB)")
    run.set_defaults(func=cmd_run)

    models = sub.add_parser("models", help="publish and list models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    pub = msub.add_parser("publish", help="upload a saveRDS() model, or an R script that defines score(data, ...), "
                          "as a new immutable version, with its card")
    pub.add_argument("path", type=Path, metavar="MODEL.rds|FUNCTION.R",
                     help="a model saved with saveRDS(), or an R script defining score <- function(data, ...) that "
                     "returns a data frame")
    pub.add_argument("--name", required=True, help="the model's name: inputs go under input/NAME/")
    pub.add_argument("--predict-type", help="the type= argument for predict(), e.g. response, prob, probs "
                     "(default: R's own default; 'response' for glm)")
    pub.add_argument("--package", action="append", default=[], metavar="PKG",
                     help="an R package the model needs that R cannot detect (repeatable)")
    pub.add_argument("--predict-arg", action="append", default=[], metavar="NAME=VALUE",
                     help="a named argument for predict(), written like an R literal and never evaluated: "
                     "200, 200L, TRUE, \"text\" (repeatable), e.g. n.trees=200, s=lambda.min")
    pub.add_argument("--levels", action="append", default=[], metavar="NAME=A,B,C",
                     help="the training levels of a factor the model keeps no record of (svm, ranger), "
                     "in order (repeatable)")
    pub.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="an R function's score(data, NAME = VALUE): numbers, TRUE/FALSE, else text (repeatable)")
    pub.add_argument("--with", dest="files", action="append", default=[], type=Path, metavar="FILE",
                     help="a file an R function reads (a model, a lookup table), published beside it and found in its "
                     "working directory (repeatable)")
    pub.add_argument("--text", action="append", default=[], metavar="COLUMN",
                     help="for an R function: hand this input column to score() as text whatever it holds (codes "
                     "with leading zeros, 00017, are otherwise read as numbers) (repeatable)")
    pub.add_argument("--tz", action="append", default=[], metavar="NAME=ZONE",
                     help="a date-time input's training time zone, when the model keeps none (e.g. "
                     "ts=America/New_York): text without a zone is read as wall-clock time there (repeatable)")
    pub.add_argument("--output-columns", metavar="A,B,C",
                     help="keep only these columns of a data-frame or matrix result, e.g. yhat,yhat_lower,yhat_upper")
    pub.add_argument("--reference", type=Path, metavar="TRAIN.csv|.parquet",
                     help="the training data, or a sample of it: profiled for drift in every run report "
                     "(default: the data the model keeps, for lm and glm)")
    pub.add_argument("--package-list", type=Path, default=DEFAULT_PACKAGE_LIST,
                     help="the image's R package list, to warn about packages it lacks "
                     "(default: docker/r-packages.txt)")
    pub.add_argument("--id-column", metavar="COLUMN",
                     help="the input column that identifies a row, by which label files are matched to its "
                     "predictions (default: none; labels then name the input and the row number)")
    pub.add_argument("--outcome-column", metavar="COLUMN", default="outcome",
                     help="the column of label files (labels/MODEL/...) that holds the outcome (default: outcome)")
    pub.add_argument("--shadow", action="store_true",
                     help="publish as the model's shadow: each input the current version scores is also scored by "
                     "this one, into shadow/MODEL/, and compared; never current until `scorer models promote`")
    pub.set_defaults(func=cmd_publish)
    ls = msub.add_parser("list", help="list published models and their versions")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_list)
    show = msub.add_parser("show", help="print a model's card")
    show.add_argument("name", help="the model's name")
    show.add_argument("--version", type=int, help="a version (default: the current one)")
    show.set_defaults(func=cmd_show)
    hist = msub.add_parser("history", help="a model's runs over time: version, inputs, rows, rejected share, cost "
                           "and worst drift (its page: reports/models/NAME.html)")
    hist.add_argument("name", help="the model's name")
    hist.add_argument("--rebuild", action="store_true",
                      help="make the history (and its page and the index) again from the run reports")
    hist.add_argument("--json", action="store_true", help="print the history document instead of a table")
    hist.set_defaults(func=cmd_history)
    shadow = msub.add_parser("shadow", help="make a published version the model's shadow (--version N), or stop "
                             "shadowing (--off)")
    shadow.add_argument("name", help="the model's name")
    which = shadow.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int, help="the version to score in the shadow")
    which.add_argument("--off", action="store_true", help="no shadow from the next run on")
    shadow.set_defaults(func=cmd_shadow)
    promote = msub.add_parser("promote", help="make the model's shadow its current version")
    promote.add_argument("name", help="the model's name")
    promote.set_defaults(func=cmd_promote)

    drop = sub.add_parser("drop", help="upload a file as a pending input: input/MODEL/NAME")
    drop.add_argument("path", type=Path, metavar="FILE", help="a .csv, .csv.gz or .parquet file")
    drop.add_argument("--model", required=True, help="the model that should score it")
    drop.add_argument("--as", dest="as_name", metavar="PATH",
                      help="its path under input/MODEL/ (default: the file's name)")
    drop.add_argument("--replace", action="store_true",
                      help="replace a pending input of that name (refused without it: no copy of it would be kept)")
    drop.add_argument("--labels", action="store_true",
                      help="drop a label file (an id and an outcome column) into labels/MODEL/NAME instead: the next "
                      "run matches it to the model's predictions")
    drop.set_defaults(func=cmd_drop)

    cat = sub.add_parser("cat", help="print a blob, e.g. output/MODEL/file.csv or the latest run report")
    cat.add_argument("blob", metavar="CONTAINER/BLOB",
                     help="a blob path; 'reports/latest' is the newest run report")
    cat.set_defaults(func=cmd_cat)

    runs = sub.add_parser("runs", help="list recent runs from their reports: outcome, counts, drift, cost")
    runs.add_argument("--top", type=int, default=20, help="how many runs, newest first (default 20)")
    runs.add_argument("--json", action="store_true", help="print the reports as a JSON array")
    runs.set_defaults(func=cmd_runs)

    rep = sub.add_parser("report", help="one run's summary, or its page (--html)")
    rep.add_argument("run", nargs="?", default="latest", metavar="RUN_ID|latest", help="a run id, as `scorer runs` "
                     "lists them (default: latest)")
    rep.add_argument("--html", type=Path, metavar="FILE", help="save the run's report page (one self-contained "
                     "HTML file) here")
    rep.add_argument("--json", action="store_true", help="print the report's JSON")
    rep.set_defaults(func=cmd_report)

    srv = sub.add_parser("serve", help="score rows over HTTP with the published models",
                         description="POST /v1/models/NAME/predict with JSON rows or CSV; GET /v1/models, "
                         "/v1/models/NAME, /healthz, /readyz, /openapi.json. Settings as for `scorer run` (the "
                         "storage account), plus SCORER_SERVE_*; see docs/running.md.")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a "
                     "container)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    srv.set_defaults(func=cmd_serve)

    local = sub.add_parser("local", help="the local twin: run logicapp/workflow.json against Azurite and a local "
                           "stand-in for Container Instances",
                           description="Runs the workflow definition with scorer's workflow engine: the schedule and "
                           "Event Grid's blob events trigger it, its HTTP actions reach a local stand-in for Azure "
                           "Resource Manager (each container group runs as a container of the scoring image, or a "
                           "process) and Azurite.")
    local.add_argument("--once", action="store_true", help="run the workflow once now (as `deploy.py trigger`), then exit "
                       "with its status")
    local.add_argument("--engine", choices=["auto", "podman", "docker", "process"], default="auto",
                       help="how each container group's container runs: podman or docker with the image, or a process")
    local.add_argument("--image", default="scorer:dev", help="the scoring image the container groups run")
    local.add_argument("--workflow", type=Path, default=REPO_ROOT / "logicapp" / "workflow.json",
                       help="the workflow definition to run (try a change locally before deploying it)")
    local.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help="a workflow parameter, as deploy.py would set it, e.g. parallelJobs=3 or "
                       "jobTimeout=PT10M (repeatable; pollSeconds is 1 here unless set)")
    local.add_argument("--interval", type=float,
                       help="fire the schedule every N seconds instead of the workflow's recurrence (for trying it out)")
    local.add_argument("--poll", type=float, default=2.0,
                       help="seconds between looks at the input container (the local Event Grid)")
    local.add_argument("--serve", type=int, nargs="?", const=8000, metavar="PORT",
                       help="also run `scorer serve` against the same Azurite (default port 8000)")
    local.add_argument("--fault", action="append", metavar="FAULT",
                       help="inject a Container Instances failure: unpullable, pending, quota:N (the Nth create is "
                       "refused), gone:N (the Nth group answers 404), throttle:K (K answers of 429)")
    local.set_defaults(func=cmd_local)

    az = sub.add_parser("azure", help="the local Azure: an Azure Resource Manager on this machine that "
                        "`scripts/deploy.py --local` deploys arm_templates/main.json into",
                        description="Serves Azure Resource Manager's deployments API on 127.0.0.1 over HTTPS until "
                        "Ctrl-C: the template is deployed as ARM deploys it, each resource with the checks Azure "
                        "makes when it is created; storage is Azurite, images are built with podman or docker, the "
                        "Logic App runs with scorer's workflow engine. See docs/twin.md.")
    az.add_argument("--port", type=int, default=0, help="port (default: a free one; endpoint.json says which)")
    az.add_argument("--engine", choices=["auto", "podman", "docker", "process"], default="auto",
                    help="how images are built and container groups run: podman or docker, or plain processes "
                    "(builds recorded, not made)")
    az.add_argument("--rbac-delay", type=float, default=0.0, metavar="SECONDS",
                    help="a new role assignment takes effect only after this long (Azure: up to minutes)")
    az.set_defaults(func=cmd_azure)
    return p


def _settings(**overrides):
    from scorer.settings import Settings
    return Settings.from_env(**overrides)


def _store(settings):
    from scorer.storage import Store, connect
    return Store(connect(settings), settings)


def cmd_run(args: argparse.Namespace) -> int:
    from scorer.batch.stopping import request_stop

    # acted on at the job's next safe point: see scorer/batch/stopping.py
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    settings = _settings(model=args.model, blob=args.blob)
    context, restore = _log_setup(settings, args.debug)
    try:
        from scorer.r import bridge as rbridge
        rbridge.start()  # first, while this is the only thread: see "Threads" in scorer/r/bridge.py
        from scorer.batch import job
        run_id = job.new_run_id()
        context["run_id"] = run_id
        store = _store(settings)
        try:
            report = job.Job(settings, store, run_id=run_id, started_at=_STARTED).run()
        finally:
            store.close()
    finally:
        restore()
    return int(report.exit_code)


def _log_setup(settings, debug: bool):
    """JSON lines to stdout with this configuration's secrets redacted, and whatever else
    would write to stdout or stderr (R's system(), C code) logged as lines of their own.
    Returns the log's context and the function that ends the routing. Call it before any
    thread starts (it forks)."""
    from scorer import log

    log.keep_secret(*settings.secret_values())
    stream = os.fdopen(os.dup(1), "w")  # the log's own copy of stdout
    context = log.setup(settings.log_level, debug=debug, stream=stream)
    return context, log.route_process_output(stream)


def cmd_publish(args: argparse.Namespace) -> int:
    from scorer.r import bridge as rbridge
    from scorer.models.cards import Options
    from scorer.models.registry import Registry

    settings = _settings()
    rbridge.start()  # before the blob I/O threads: see "Threads" in scorer/r/bridge.py
    store = _store(settings)
    store.ensure_containers()
    opts = Options(predict_type=args.predict_type, packages=args.package, predict_args=args.predict_arg,
                   levels=args.levels, package_list=args.package_list, params=args.param, files=args.files,
                   reference=args.reference, text=args.text, tz=args.tz, shadow=args.shadow,
                   id_column=args.id_column, outcome_column=args.outcome_column,
                   output_columns=[c.strip() for c in args.output_columns.split(",") if c.strip()]
                   if args.output_columns else None)
    pub = Registry(store).publish(args.path, args.name, opts)
    card = pub.card
    for w in pub.warnings:
        print(f"warning: {w}", file=sys.stderr)
    schema = card.get("input_schema") or []
    if card.get("kind") == "function":
        print(f"published {card['name']} version {card['version']}: R function score({', '.join(card['arguments'])}) "
              f"from {card['source_file']} (sha256 {card['sha256'][:12]}...)"
              + (f", params {', '.join(p['name'] + '=' + str(p['value']) for p in card['params'])}" if card['params'] else ""))
        print(f"drop files under {settings.input_container}/{card['name']}/ to run it on each")
        return 0
    print(f"published {card['name']} version {card['version']} (sha256 {card['sha256'][:12]}..., "
          f"R class {'/'.join(card['r_class'])}, predict type {card['predict_type'] or 'R default'})")
    if schema:
        print("inputs: " + ", ".join(f"{f['name']} ({f['class']})" for f in schema))
    if card.get("profile"):
        p = card["profile"]
        print(f"drift profile: {p['source']}, {p['rows']} rows (predictions on {p['prediction_rows']})")
    if args.shadow:
        print(f"version {card['version']} is the shadow: each input the current version scores is also scored by it, "
              f"into {settings.shadow_container}/{card['name']}/; `scorer models promote {card['name']}` makes it current")
    else:
        print(f"drop files under {settings.input_container}/{card['name']}/ to score them")
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    from scorer.models import shadows
    from scorer.models.registry import Registry

    settings = _settings()
    before = shadows.set_shadow(Registry(_store(settings)), args.name, None if args.off else args.version)
    if args.off:
        print(f"{args.name}: no shadow" + (f" (version {before} was)" if before is not None else " (there was none)"))
    else:
        print(f"{args.name}: version {args.version} is the shadow from the next run on, into "
              f"{settings.shadow_container}/{args.name}/" + (f" (was version {before})" if before is not None else ""))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from scorer.models import shadows
    from scorer.models.registry import Registry

    version = shadows.promote(Registry(_store(_settings())), args.name)
    print(f"{args.name}: version {version} is current from the next run on (and for `scorer serve` at its next "
          "refresh); no shadow")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from scorer.models.registry import Registry

    settings = _settings()
    reg = Registry(_store(settings))
    rows = []
    for name in reg.names():
        versions = reg.versions(name)
        try:
            card, shadow = reg.current_and_shadow(name)
        except errors.ModelNotFound:  # only versions that are or were its shadow
            card, shadow = reg.card(name, versions[-1]), None
            card = dict(card, version=None)
        rows.append({"name": name, "versions": versions, "current": card["version"],
                     "shadow": shadow["version"] if shadow else None,
                     "r_class": card.get("r_class") or ["function"], "published_at": card["published_at"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models published yet: scorer models publish MODEL.rds --name NAME")
        return 0
    print(f"{'NAME':24} {'CURRENT':>7} {'SHADOW':>6}  {'VERSIONS':16} {'R CLASS':24} PUBLISHED")
    for r in rows:
        print(f"{r['name']:24} {r['current'] or '–':>7} {r['shadow'] or '–':>6}  {','.join(map(str, r['versions'])):16} "
              f"{'/'.join(r['r_class']):24} {r['published_at']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from scorer.models.registry import Registry

    reg = Registry(_store(_settings()))
    print(json.dumps(reg.card(args.name, args.version), indent=2))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from scorer.monitoring import history, runs

    settings = _settings()
    store, container = _store(settings), settings.reports_container
    if args.rebuild:
        t = time.monotonic()
        made = runs.rebuild(store, container, only=args.name)
        print(f"rebuilt from {len(runs.run_ids(store, container))} run report(s) in {time.monotonic() - t:.1f} s",
              file=sys.stderr)
        doc = made.get(args.name)
    else:
        doc = runs.load_history(store, container, args.name)
    if not doc or not doc.get("runs"):
        raise errors.ConfigError(f"no history of model {args.name!r} in {container}/{runs.MODELS}: no run has scored "
                                 "it since histories are kept, and no run report names it.",
                                 hint="Run `scorer run` with inputs for it; or --rebuild, to make the history "
                                 "from the run reports there are.")
    quality = history.quality_table(doc)
    print(json.dumps(doc, indent=2) if args.json else "\n".join(
        history.table(doc) + (["", "quality from labels, by the day of the run that predicted:", *quality]
                              if quality else [])))
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from scorer.data.formats import format_of
    from scorer.models.registry import check_name

    settings = _settings()
    why = check_name(args.model)
    if why:
        raise errors.ConfigError(f"--model {args.model!r} is not valid: {why}.", hint="Use a published model's name.")
    if not args.path.is_file():
        raise errors.ConfigError(f"{args.path}: no such file.", hint="Give the path of a CSV or Parquet file.")
    rel = (args.as_name or args.path.name).lstrip("/")
    format_of(rel)
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    store = _store(settings)
    store.ensure_containers()
    container = settings.labels_container if args.labels else settings.input_container
    where = f"{container}/{args.model}/{rel}"
    try:  # a pending input is replaced only when asked: Blob Storage keeps no copy of what it overwrites
        store.put_bytes(container, f"{args.model}/{rel}", args.path.read_bytes(), overwrite=args.replace)
    except ResourceExistsError:
        raise errors.ConfigError(
            f"{where} is pending already (not scored yet); dropping {args.path} there would replace it, and no copy "
            "of it would be kept.", hint="Drop it under another name (--as PATH), wait until the pending one is "
            "scored (it then moves to archive/), or pass --replace if the pending one should go.") from None
    except HttpResponseError as exc:
        if exc.status_code != 412:
            raise
        raise errors.ConfigError(f"{where} is being scored right now (a job holds its lease); it cannot be "
                                 "replaced meanwhile.", hint="Drop the file again once that run has finished, "
                                 "or under another name (--as PATH).") from None
    print(f"{'replaced' if args.replace else 'dropped'} {args.path} as {where}")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    settings = _settings()
    container, _, name = args.blob.partition("/")
    if not name:
        raise errors.ConfigError(f"{args.blob!r} is not CONTAINER/BLOB.", hint="For example output/mymodel/day.csv.")
    store = _store(settings)
    if container == settings.reports_container and name == "latest":
        from scorer.monitoring import runs
        ids = runs.run_ids(store, container)
        if not ids:
            raise errors.ConfigError("No run report yet.", hint="Run `scorer run` or `scorer local --once` first.")
        name = ids[-1] + runs.SUFFIX
    from azure.core.exceptions import ResourceNotFoundError
    try:
        data = store.read_bytes(container, name)
    except ResourceNotFoundError:
        raise errors.ConfigError(f"No blob {container}/{name}.", hint="Check the container and path.") from None
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from scorer.monitoring import runs

    if args.top < 1:
        raise errors.ConfigError(f"--top {args.top}: give a number of runs above 0.", hint="For example --top 10.")
    settings = _settings()
    reports = runs.recent(_store(settings), settings.reports_container, args.top)
    if args.json:
        print(json.dumps(reports, indent=2))
    elif not reports:
        print(f"no run reports in {settings.reports_container}/ yet: `scorer run` or `scorer local --once` writes one")
    else:
        print("\n".join(runs.table(reports)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from scorer.monitoring import runs
    from scorer.monitoring.page import render

    settings = _settings()
    report = runs.find(_store(settings), settings.reports_container, args.run)
    if args.html:
        try:
            args.html.write_text(render(report), encoding="utf-8")
        except OSError as exc:
            raise errors.ConfigError(f"--html {args.html}: {exc.strerror}.", hint="Give a file path you can write.") \
                from None
        print(f"saved the page of run {report['run_id']} as {args.html}")
    elif args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(runs.summary(report)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from scorer.r import bridge as rbridge

    settings = _settings()
    _, restore = _log_setup(settings, args.debug)
    try:
        rbridge.start()  # first, while this is the only thread: see "Threads" in scorer/r/bridge.py
        from scorer.online.app import build_app
        from scorer.online.serve import Server
        store = _store(settings)
        try:
            server = Server(settings, store, args.host, args.port)
            return server.run(build_app(server))
        finally:
            store.close()
    finally:
        restore()


def cmd_local(args: argparse.Namespace) -> int:
    from scorer.twin.local import main as local_main
    return local_main(args)


def cmd_azure(args: argparse.Namespace) -> int:
    from scorer.twin.arm import main as azure_main
    return azure_main(args)


def entry() -> None:
    """The `scorer` command (and `python -m scorer`): main(), then a quick exit."""
    _quick_exit(main())


def _quick_exit(code: int) -> None:
    """Exit at once with ``code``, skipping the interpreter's teardown.

    Tearing down pyarrow, the Azure SDK and embedded R took 0.10-0.17 s on this
    machine after the run had finished, billed on every container start. Nothing
    is left for it to do: every blob write has returned, the job's threads have
    stopped, and the temporary directories are gone. What it would still have
    done is done here: R's session temp dir, the log handlers, stdout and stderr.
    """
    rbridge = sys.modules.get("scorer.r.bridge")  # only if this process started R
    if rbridge is not None:
        rbridge.discard_session()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`scorer cat ... | head`) or stream
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ScorerError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"what to do: {exc.hint}", file=sys.stderr)
        if isinstance(exc, errors.ConfigError):
            return errors.EXIT_CONFIG
        if isinstance(exc, errors.StorageError):
            return errors.EXIT_STORAGE
        return errors.EXIT_REFUSED  # a command that could not do what was asked; the message says why
    except KeyboardInterrupt:
        return errors.EXIT_INTERRUPTED

"""All of scorer's settings, read once from the environment.

This module is the only place that names environment variables. docs/running.md's
settings table, the Logic App's container environment and the local runner are
all checked against ``SETTINGS`` by the tests, so a name cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from scorer.errors import ConfigError

# Azure's container naming rule; checked here so a typo fails at start-up with the
# variable's name rather than as an HTTP 400 halfway through a run.
_CONTAINER_RE = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _container(value: str) -> str:
    if not _CONTAINER_RE.match(value):
        raise ValueError(
            "must be 3-63 lower-case letters, digits or single hyphens, "
            "starting and ending with a letter or digit"
        )
    return value


def _fraction(value: str) -> float:
    f = float(value)
    if not 0.0 <= f <= 1.0:
        raise ValueError("must be a number between 0 and 1")
    return f


def _positive_int(value: str) -> int:
    i = int(value)
    if i <= 0:
        raise ValueError("must be a whole number above 0")
    return i


def _positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise ValueError("must be a number above 0")
    return f


def _log_level(value: str) -> str:
    v = value.upper()
    if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return v


def _text(value: str) -> str:
    return value


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    i = int(value)
    if i <= 0:
        raise ValueError('must be "auto" or a whole number above 0')
    return i


def _seconds(value: str) -> float:
    f = float(value)
    if f < 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return f


def _tokens(value: str) -> tuple[str, ...]:
    if value.strip().lower() == "none":
        return ()
    tokens = tuple(t.strip() for t in value.split(","))
    if any(not t for t in tokens):
        raise ValueError('must be tokens separated by commas (e.g. "NA,n/a"), or none')
    return tokens


def _encoding(value: str) -> str:
    import codecs

    try:
        return codecs.lookup(value).name
    except LookupError:
        raise ValueError("must be a text encoding Python knows, e.g. utf-8, cp1252 or latin-1") from None


def _decimal(value: str) -> str:
    if value not in ("auto", ".", ","):
        raise ValueError('must be auto, "." or ","')
    return value


def _sas_signatures(query: str) -> list[str]:
    """The signature (``sig=``) of a shared access signature, as written and URL-decoded."""
    from urllib.parse import unquote

    raw = [v for k, _, v in (p.partition("=") for p in query.lstrip("?").split("&")) if k.lower() == "sig"]
    return raw + [unquote(v) for v in raw]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its field, its environment variable, its parser and its doc."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting("connection_string", "AZURE_STORAGE_CONNECTION_STRING", _text, None,
            "Connection string for Blob Storage (Azurite and development). "
            "Takes precedence over SCORER_ACCOUNT_URL."),
    Setting("account_url", "SCORER_ACCOUNT_URL", _text, None,
            "Blob endpoint, e.g. https://myaccount.blob.core.windows.net, reached with "
            "DefaultAzureCredential (in Azure: the managed identity; set AZURE_CLIENT_ID "
            "for a user-assigned one)."),
    Setting("models_container", "SCORER_MODELS_CONTAINER", _container, "models",
            "Published models: <name>/v<N>/model.rds and card.json."),
    Setting("input_container", "SCORER_INPUT_CONTAINER", _container, "input",
            "Pending inputs: <model>/<any/path>.csv|.csv.gz|.parquet."),
    Setting("output_container", "SCORER_OUTPUT_CONTAINER", _container, "output",
            "Scored outputs, same relative path and format as the input."),
    Setting("archive_container", "SCORER_ARCHIVE_CONTAINER", _container, "archive",
            "Inputs after their output is committed."),
    Setting("quarantine_container", "SCORER_QUARANTINE_CONTAINER", _container, "quarantine",
            "Inputs that could not be scored, each with an .error.json beside it."),
    Setting("reports_container", "SCORER_REPORTS_CONTAINER", _container, "reports",
            "One JSON run report per run."),
    Setting("shadow_container", "SCORER_SHADOW_CONTAINER", _container, "shadow",
            "A shadow version's outputs (docs/models.md, \"A challenger in the shadow\"): never read by users' jobs."),
    Setting("labels_container", "SCORER_LABELS_CONTAINER", _container, "labels",
            "Label files: <model>/<any/path>.csv|.csv.gz|.parquet with an id and an outcome column, matched to the "
            "predictions in output/ by the next run (docs/monitoring.md, \"Outcomes\")."),
    Setting("max_rejected_fraction", "SCORER_MAX_REJECTED_FRACTION", _fraction, 0.1,
            "Largest share of an input's rows that may be rejected (unseen factor level, "
            "unparseable value) before the whole input is quarantined."),
    Setting("batch_rows", "SCORER_BATCH_ROWS", _positive_int, 250_000,
            "Most rows handed to R's predict() at a time (fewer when rows are wide: a batch "
            "holds at most 8 MiB of CSV text); bounds memory for large inputs."),
    Setting("lease_seconds", "SCORER_LEASE_SECONDS", _positive_int, 60,
            "Length of the blob lease that claims an input (15-60); renewed while working, "
            "so a job that dies loses its claims within this time."),
    Setting("credential_timeout", "SCORER_CREDENTIAL_TIMEOUT", _positive_float, 120.0,
            "Seconds to keep retrying the first token and storage call: a new container "
            "group's identity endpoint is not ready at once."),
    Setting("max_attempts", "SCORER_MAX_ATTEMPTS", _positive_int, 3,
            "An input whose scoring was started this many times without finishing "
            "(the job crashed or was killed) is quarantined as poison."),
    Setting("max_input_bytes", "SCORER_MAX_INPUT_BYTES", _positive_int, 20 * 1024**3,
            "Largest input accepted, after decompression (guards against gzip bombs)."),
    Setting("max_function_bytes", "SCORER_MAX_FUNCTION_BYTES", _positive_int, 2 * 1024**3,
            "Largest input an R scoring function takes, once read: a function gets the whole file at once, "
            "so the container needs several times this much memory."),
    Setting("csv_decimal", "SCORER_CSV_DECIMAL", _decimal, "auto",
            "Decimal mark of numbers in CSV inputs: auto (a comma when fields are separated by ';' and the "
            "first rows hold numbers with a decimal comma and none with a point), '.' or ','."),
    Setting("csv_encoding", "SCORER_CSV_ENCODING", _encoding, "utf-8",
            "Text encoding of CSV inputs (utf-8, with or without a byte-order mark; cp1252 for Excel's plain 'CSV' "
            "on Western European Windows; latin-1, ...). CSV outputs are written in the same encoding."),
    Setting("na_values", "SCORER_NA_VALUES", _tokens, ("NA",),
            "Text read as a missing value in CSV inputs, besides the empty cell: tokens separated by commas, or none. "
            "In a factor column whose model levels include a token (a region called NA), the token is that level."),
    Setting("r_workers", "SCORER_R_WORKERS", _workers, "auto",
            "R sessions that may predict at once, the job's own included: auto (the cores the container may "
            "use) or a number; 1 keeps to the job's own R. Extra sessions are R worker processes, started only "
            "for a model whose predict() is slow (SCORER_R_WORKERS_AFTER), never for ranger, which uses every "
            "core itself."),
    Setting("r_workers_after", "SCORER_R_WORKERS_AFTER", _seconds, 0.5,
            "Start the extra R workers once one batch's predict() has taken this many seconds: a worker takes "
            "about a second to start, which a fast model would never win back."),
    Setting("parallel_jobs", "SCORER_PARALLEL_JOBS", _positive_int, 1,
            "Container groups in this run (the workflow sets it from parallelJobs). With more than one, an input "
            "larger than SCORER_SPLIT_BYTES is cut into parts that the groups score together."),
    Setting("split_bytes", "SCORER_SPLIT_BYTES", _positive_int, 256 * 1024**2,
            "Inputs larger than this are split into parts of about this size when the run has several container "
            "groups (CSV by line ranges, Parquet by row groups; never gzipped CSV)."),
    Setting("inputs_in_flight", "SCORER_INPUTS_IN_FLIGHT", _positive_int, 8,
            "Small inputs worked on at once: while R scores one, the others are claimed, read, committed and "
            "archived, each under its own lease. 1 works on one input at a time."),
    Setting("small_input_bytes", "SCORER_SMALL_INPUT_BYTES", _positive_int, 2 * 1024**2,
            "Inputs up to this size may be in flight together (each is read whole into memory); a larger one "
            "waits for them and streams alone, so memory stays bounded."),
    Setting("drift_psi", "SCORER_DRIFT_PSI", _positive_float, 0.2,
            "Population stability index at which a variable or prediction column is flagged as drifted "
            "(0.1 is commonly read as a moderate shift, 0.2 as a significant one). A flag is a warning, never a "
            "quarantine."),
    Setting("cpu_cores", "SCORER_CPU_CORES", _positive_float, None,
            "vCPUs of the container, for the run's cost estimate (the workflow sets it from cpuCores)."),
    Setting("memory_gb", "SCORER_MEMORY_GB", _positive_float, None,
            "GB of memory of the container, for the run's cost estimate (the workflow sets it from memoryInGB)."),
    Setting("price_vcpu_second", "SCORER_PRICE_VCPU_SECOND", _positive_float, 0.00001125,
            "USD per vCPU-second of Container Instances (Linux): default $0.0405 per vCPU-hour, East US, a "
            "third-party reading of Azure's Retail Prices API dated 2026-08-27, not verified. Set your region's."),
    Setting("price_gb_second", "SCORER_PRICE_GB_SECOND", _positive_float, 0.0000012361,
            "USD per GB-second of Container Instances memory: default $0.00445 per GB-hour, same source as "
            "SCORER_PRICE_VCPU_SECOND."),
    Setting("serve_max_body_bytes", "SCORER_SERVE_MAX_BODY_BYTES", _positive_int, 10 * 1024**2,
            "scorer serve: the largest request body accepted (413 above it)."),
    Setting("serve_gather_ms", "SCORER_SERVE_GATHER_MS", _seconds, 2.0,
            "scorer serve: how long R waits for requests still being read, to predict them in one call with "
            "those already waiting (milliseconds; 0 takes only what is already waiting)."),
    Setting("serve_max_rows", "SCORER_SERVE_MAX_ROWS", _positive_int, 50_000,
            "scorer serve: the most rows gathered into one predict() call."),
    Setting("serve_refresh_seconds", "SCORER_SERVE_REFRESH_SECONDS", _positive_float, 5.0,
            "scorer serve: how often the server looks for new model versions (each is loaded before it is "
            "served)."),
    Setting("serve_max_request_rows", "SCORER_SERVE_MAX_REQUEST_ROWS", _positive_int, 100_000,
            "scorer serve: the most rows one request may hold (413 above it)."),
    Setting("serve_max_columns", "SCORER_SERVE_MAX_COLUMNS", _positive_int, 1_000,
            "scorer serve: the most columns one request may hold (400 above it)."),
    Setting("serve_max_name_chars", "SCORER_SERVE_MAX_NAME_CHARS", _positive_int, 256,
            "scorer serve: the longest column name a request may use (400 above it)."),
    Setting("serve_max_cells", "SCORER_SERVE_MAX_CELLS", _positive_int, 5_000_000,
            "scorer serve: the most cells (rows x columns) one request's table may hold (413 above it): "
            "bounds the memory a sparse JSON body can ask for."),
    Setting("serve_deadline_seconds", "SCORER_SERVE_DEADLINE_SECONDS", _positive_float, 30.0,
            "scorer serve: how long a request may wait for its predictions; then 504, and its rows are "
            "dropped from R's queue if R has not started them."),
    Setting("serve_stuck_seconds", "SCORER_SERVE_STUCK_SECONDS", _positive_float, 120.0,
            "scorer serve: /healthz answers 503 when one R call has run this long, so the platform's liveness "
            "probe restarts a replica whose model hangs."),
    Setting("serve_drain_seconds", "SCORER_SERVE_DRAIN_SECONDS", _positive_float, 50.0,
            "scorer serve: after SIGTERM, how long the server keeps answering the requests it has accepted "
            "(it accepts no new ones) before it exits; keep it under the Container App's "
            "terminationGracePeriodSeconds (60 in the template)."),
    Setting("serve_max_bodies", "SCORER_SERVE_MAX_BODIES", _positive_int, 32,
            "scorer serve: how many request bodies may be read at once (503 with Retry-After beyond): bounds the "
            "memory slow clients can hold."),
    Setting("serve_body_seconds", "SCORER_SERVE_BODY_SECONDS", _positive_float, 30.0,
            "scorer serve: how long a client may take to send its body (408 after it)."),
    Setting("serve_versions_bytes", "SCORER_SERVE_VERSIONS_BYTES", _positive_int, 512 * 1024**2,
            "scorer serve: the model-file bytes of non-current versions (?version=N) kept loaded; the least "
            "recently used are unloaded beyond it."),
    Setting("model", "SCORER_MODEL", _text, None,
            "Score only this model's inputs (same as `scorer run --model`)."),
    Setting("blob", "SCORER_BLOB", _text, None,
            "Score only this input blob, e.g. glm/2026/day.csv (same as `scorer run --blob`)."),
    Setting("log_level", "SCORER_LOG_LEVEL", _log_level, "INFO",
            "DEBUG, INFO, WARNING or ERROR."),
)

ENV_NAMES: frozenset[str] = frozenset(s.env for s in SETTINGS)

#: secrets azure-identity reads from the environment (EnvironmentCredential), which
#: scorer never uses itself but redacts wherever they appear (scorer.log.keep_secret)
SECRET_ENV = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD")


@dataclasses.dataclass(frozen=True)
class Settings:
    """scorer's configuration. Build with ``Settings.from_env()``."""

    connection_string: str | None = None
    account_url: str | None = None
    models_container: str = "models"
    input_container: str = "input"
    output_container: str = "output"
    archive_container: str = "archive"
    quarantine_container: str = "quarantine"
    reports_container: str = "reports"
    shadow_container: str = "shadow"
    labels_container: str = "labels"
    max_rejected_fraction: float = 0.1
    batch_rows: int = 250_000
    lease_seconds: int = 60
    credential_timeout: float = 120.0
    max_attempts: int = 3
    max_input_bytes: int = 20 * 1024**3
    max_function_bytes: int = 2 * 1024**3
    csv_decimal: str = "auto"
    na_values: tuple[str, ...] = ("NA",)
    csv_encoding: str = "utf-8"
    parallel_jobs: int = 1
    split_bytes: int = 256 * 1024**2
    r_workers: int | str = "auto"
    r_workers_after: float = 0.5
    inputs_in_flight: int = 8
    small_input_bytes: int = 2 * 1024**2
    drift_psi: float = 0.2
    cpu_cores: float | None = None
    memory_gb: float | None = None
    price_vcpu_second: float = 0.00001125
    price_gb_second: float = 0.0000012361
    serve_max_body_bytes: int = 10 * 1024**2
    serve_gather_ms: float = 2.0
    serve_max_rows: int = 50_000
    serve_refresh_seconds: float = 5.0
    serve_max_request_rows: int = 100_000
    serve_max_columns: int = 1_000
    serve_max_name_chars: int = 256
    serve_max_cells: int = 5_000_000
    serve_deadline_seconds: float = 30.0
    serve_stuck_seconds: float = 120.0
    serve_drain_seconds: float = 50.0
    serve_max_bodies: int = 32
    serve_body_seconds: float = 30.0
    serve_versions_bytes: int = 512 * 1024**2
    model: str | None = None
    blob: str | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every setting from ``environ`` (default: ``os.environ``).

        ``overrides`` (e.g. from command-line flags) win over the environment.
        Raises ConfigError naming the variable when a value does not parse.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = env.get(s.env)
            if raw is None or raw == "":
                values[s.field] = s.default
                continue
            try:
                values[s.field] = s.parse(raw.strip())
            except ValueError as exc:
                raise ConfigError(
                    f"{s.env}={raw!r} is not valid: {exc}.",
                    hint=f"Fix or unset {s.env}. {s.doc}",
                    setting=s.env,
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ConfigError when the settings cannot work together."""
        if not (self.connection_string or self.account_url):
            raise ConfigError(
                "No storage account is configured.",
                hint="Set AZURE_STORAGE_CONNECTION_STRING (Azurite, development) or "
                "SCORER_ACCOUNT_URL (Azure, with a managed identity).",
                setting="AZURE_STORAGE_CONNECTION_STRING",
            )
        if not 15 <= self.lease_seconds <= 60:
            raise ConfigError(
                f"SCORER_LEASE_SECONDS={self.lease_seconds} is outside 15-60, the range "
                "Blob Storage accepts for a lease.",
                hint="Set SCORER_LEASE_SECONDS between 15 and 60.",
                setting="SCORER_LEASE_SECONDS",
            )
        names = list(self.containers)
        if len(set(names)) != len(names):
            raise ConfigError(
                f"Two of scorer's containers share a name ({', '.join(names)}).",
                hint="Give SCORER_*_CONTAINER settings distinct names: input/ must hold "
                "only pending work.",
                setting="SCORER_INPUT_CONTAINER",
            )

    @property
    def containers(self) -> tuple[str, ...]:
        return (self.models_container, self.input_container, self.output_container,
                self.archive_container, self.quarantine_container, self.reports_container, self.shadow_container,
                self.labels_container)

    def secret_values(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """The secrets this configuration holds, as values: the connection string's
        account key and SAS, a SAS in the account URL, and SECRET_ENV's variables."""
        out: list[str] = []
        for part in (self.connection_string or "").split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("accountkey", "sharedaccesssignature"):
                out += [value.strip(), *_sas_signatures(value)]
        if self.account_url and "?" in self.account_url:
            out += _sas_signatures(self.account_url.split("?", 1)[1])
        env = os.environ if environ is None else environ
        return out + [env[v] for v in SECRET_ENV if env.get(v)]

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict, safe to log: the connection string is never shown."""
        out = dataclasses.asdict(self)
        if out["connection_string"]:
            out["connection_string"] = "<set>"
        return out

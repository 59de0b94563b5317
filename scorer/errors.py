"""Every error scorer raises on purpose, in one small tree.

    ScorerError                    anything scorer reports to a user (never a traceback)
    ├── ConfigError                a setting is missing or malformed           -> exit 2
    ├── StorageError               Blob Storage unreachable or refused us      -> exit 4
    ├── ResourceError              out of disk space or memory on an input     -> exit 5
    │                              (the input stays pending; the attempt records why)
    ├── ModelError                 the model cannot be used; its inputs are quarantined
    │   ├── ModelNotFound          no published model (or version) of that name
    │   └── ModelLoadError         checksum mismatch, corrupt .rds, missing R package
    └── InputError                 this input cannot be scored; it is quarantined
        ├── InputFormatError       empty, header-only, malformed, unsupported format
        ├── SchemaError            missing columns or wrong column types
        ├── TooManyRejected        rejected rows exceed SCORER_MAX_REJECTED_FRACTION
        ├── PoisonInput            started SCORER_MAX_ATTEMPTS times, never finished
        ├── PredictError           R's predict() itself failed on this data
        └── BlobError              Blob Storage refused an operation on this one blob
                                   (too many tags, a name too long): not an outage

Apart from the tree, ``Interrupted`` (a BaseException, like KeyboardInterrupt) is
raised at a safe point after SIGTERM/SIGINT asked the job to stop: the input being
worked on stays pending and its lease is released.

Each message names the blob, model, column or setting involved and says what to do
next, because it is shown to users verbatim: in the log, the run report and the
quarantine note. ``hint`` carries the "what to do" part separately so the report
can show it as its own field.
"""

from __future__ import annotations


class ScorerError(Exception):
    """Base of every error scorer raises on purpose."""

    #: what the user should do about it; shown beside the message
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, **details: object):
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        #: structured context (columns, rows, blob names) for reports
        self.details = details

    @property
    def kind(self) -> str:
        return type(self).__name__

    def as_dict(self) -> dict:
        out: dict = {"kind": self.kind, "message": str(self)}
        if self.hint:
            out["what_to_do"] = self.hint
        out.update({k: v for k, v in self.details.items() if v is not None})
        return out


class ConfigError(ScorerError):
    """A setting (environment variable or command-line option) is missing or malformed."""


class StorageError(ScorerError):
    """Blob Storage could not be reached, or refused the request (auth, permissions)."""

    hint = (
        "Check that the storage account is reachable and that the identity has the "
        "Storage Blob Data Contributor role; inputs were left in place and the next "
        "run will pick them up."
    )


class ResourceError(ScorerError):
    """The job ran out of disk space or memory while working on an input.

    Not the input's fault as such, and not scorer's: the input stays pending, the
    attempt records the cause, and a poison quarantine quotes it.
    """

    #: the short code recorded with the attempt (scorer.batch.claims)
    code = "resources"


class OutOfDisk(ResourceError):
    """No space left on the device that holds the job's temporary files."""

    code = "no-space"
    hint = ("Give the job more temporary disk space (TMPDIR), or split the file; the input stays "
            "in input/ and is retried by the next run.")


class OutOfMemory(ResourceError):
    """Python, Arrow or R could not allocate memory."""

    code = "out-of-memory"
    hint = ("Give the container more memory (memoryInGB), lower SCORER_BATCH_ROWS, or split the "
            "file; the input stays in input/ and is retried by the next run.")


class ModelError(ScorerError):
    """The model an input asks for cannot be used."""


class ModelNotFound(ModelError):
    """No published model, or no such version, of that name."""


class ModelLoadError(ModelError):
    """The model's file failed its checksum, could not be read by R, or needs a missing package."""


class InputError(ScorerError):
    """This input cannot be scored as it is; it is quarantined with this message."""


class InputFormatError(InputError):
    """The file is empty, header-only, malformed, or of an unsupported format."""


class SchemaError(InputError):
    """Required columns are missing, or a column has the wrong type."""


class TooManyRejected(InputError):
    """More rows were rejected than SCORER_MAX_REJECTED_FRACTION allows."""


class PoisonInput(InputError):
    """Scoring of this input was started SCORER_MAX_ATTEMPTS times and never finished."""


class PredictError(InputError):
    """R's predict() raised an error on this input."""

    hint = ("R's own message above says what it could not do with these rows. Check the input "
            "against the model's card (`scorer models show MODEL`: column types, factor levels), "
            "or score a few rows with the model in R to see the same error there.")


class BlobError(InputError):
    """Blob Storage refused an operation on this one blob (a 4xx about the blob,
    not the service): it is quarantined, and the run goes on with the others."""


class Interrupted(BaseException):
    """The job was asked to stop (SIGTERM/SIGINT); raised only at safe points."""


#: process exit statuses, documented in docs/running.md
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_REFUSED = 1  # the other commands: refused (publish of a model that cannot be scored, ...)
EXIT_CONFIG = 2
EXIT_INPUTS_FAILED = 3
EXIT_STORAGE = 4
EXIT_RESOURCES = 5
EXIT_INTERRUPTED = 130

#: what a run's exit status says, in a few words (run report page, `scorer runs`)
EXIT_OUTCOME = {
    EXIT_OK: "all scored",
    EXIT_INTERNAL: "internal error",
    EXIT_CONFIG: "bad settings",
    EXIT_INPUTS_FAILED: "inputs quarantined",
    EXIT_STORAGE: "storage failed",
    EXIT_RESOURCES: "out of disk or memory",
    EXIT_INTERRUPTED: "stopped",
}

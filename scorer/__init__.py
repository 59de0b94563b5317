"""scorer: serverless batch scoring of saved R models on Azure Blob Storage.

Where things happen (one concern per module):
    cli.py       the command line (`scorer run`, `scorer models ...`, `scorer serve`, `scorer local`)
    job.py       one run: claim inputs, score, commit, archive or quarantine, report
    claims.py    blob leases that claim inputs
    models.py    the model registry: publish, list, resolve, load (checksum-verified)
    cards.py     what a model card says, and the checks before publishing
    formats.py   CSV / CSV.gz / Parquet in, same format out
    frames.py    input batches validated and converted for R (pure)
    scoring.py   one input stream scored batch by batch (pure core)
    pool.py      R worker processes: predict() on every core
    drift.py     reference profiles and PSI (pure)
    scorer/r/bridge.py   embedded R: the only module that imports rpy2
    storage.py   the Blob client factory and blob operations
    report.py    the run report; page.py its HTML page; runs.py past runs; log.py the JSON-lines log
    online.py    rows in memory (pure): what serve.py (HTTP) and api.py (scorer.predict) share
    settings.py  every setting; errors.py every error
    azure/       the workflow engine and local Azure stand-in of the twin (local.py)

From Python: ``scorer.predict(model, frame)`` (scorer/online/api.py).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # scorer.predict imports R, Arrow and the registry on first use only: `import scorer`
    # stays cheap, and the job never loads what it does not need
    if name == "predict":
        from scorer.online.api import predict
        return predict
    raise AttributeError(f"module 'scorer' has no attribute {name!r}")

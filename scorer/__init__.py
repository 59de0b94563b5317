"""scorer: serverless batch scoring of saved R models on Azure Blob Storage.

Packages by capability, in layers (docs/architecture.md; tests/test_architecture.py keeps
the rules):

    cli.py            the commands (`scorer run`, `scorer models ...`, `scorer serve`, `scorer local`)
    batch/            `scorer run`: claim inputs, score, commit, archive or quarantine, report
    online/           `scorer serve` and scorer.predict: rows in memory
    models/           the model registry and its cards
    r/                embedded R (bridge, the only rpy2 importer), R workers, one predict() call
    monitoring/       drift, run reports and their pages, past runs
    data/             files read and written, rows checked for R (pure)
    twin/             Azure on this machine: the workflow engine, the stand-in, `scorer local`
    azure/            the workflow's language and parameters, the deployment
    settings.py, errors.py, log.py, storage.py     the ground every package stands on

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

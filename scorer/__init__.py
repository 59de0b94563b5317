"""scorer: serverless batch scoring of saved R models on Azure Blob Storage.

Where things happen (one concern per module):
    cli.py       the command line (`scorer run`, `scorer models ...`, `scorer local`)
    job.py       one run: claim inputs, score, commit, archive or quarantine, report
    claims.py    blob leases that claim inputs
    models.py    the model registry: publish, list, resolve, load (checksum-verified)
    formats.py   CSV / CSV.gz / Parquet in, same format out
    frames.py    input batches validated and converted for R (pure)
    scoring.py   one input stream scored batch by batch (pure core)
    rbridge.py   embedded R: the only module that imports rpy2
    storage.py   the Blob client factory and blob operations
    report.py    the run report; log.py the JSON-lines log
    settings.py  every setting; errors.py every error
"""

__version__ = "0.1.0"

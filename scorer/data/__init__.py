"""The data path, pure: input files read (CSV, CSV.gz, TSV, Parquet) and outputs written in
the same format (formats), batches checked against a model's input schema and laid out
for R, predictions named (frames), and the rejected-rows file (rejected).

May import: the ground (scorer.errors, scorer.settings). Never R, storage or a run.
"""

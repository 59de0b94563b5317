"""Rows in memory: `scorer serve` (serve: loading, gathering requests into one predict()
call; app: the HTTP routes and errors; openapi.json) and `scorer.predict` from Python
(api), sharing one reading of rows (rows).

May import: the ground, scorer.data, scorer.r, scorer.monitoring, scorer.models. Never
scorer.batch or scorer.twin.
"""

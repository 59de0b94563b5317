"""R: the embedded interpreter (bridge, the only module that imports rpy2; R source text
is never built from data, it calls functions defined in scorer.R), the worker processes
that run predict() on every core (pool), and one batch's predict() call with what it
refuses (predict).

May import: the ground and scorer.data.
"""

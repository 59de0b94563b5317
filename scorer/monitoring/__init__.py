"""What a run leaves to read: drift against the reference profile (drift, pure), the run
report (report), its HTML page (page), and past runs (runs).

May import: the ground and scorer.data.
"""

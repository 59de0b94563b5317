"""What a run leaves to read: drift against the reference profile (drift, pure), the run
report (report), its HTML page (page), past runs (runs), and each model's runs summed
(history, pure) with its page and the index of models (model_page); a model's quality once
labels arrive (quality, pure).

May import: the ground and scorer.data.
"""

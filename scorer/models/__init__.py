"""Models: the registry in Blob Storage (publish, list, resolve, load with its checksum),
what a card says and the checks before a model is published (cards), the drift
profile made at publish (profile), and the shadow version's marks (shadows).

May import: the ground, scorer.data, scorer.r, scorer.monitoring.
"""

"""The batch job (`scorer run`): one run lists the pending inputs, claims each with a blob
lease (claims), loads its model, scores the file batch by batch (stream) or, when it is
large, in parts across container groups (split), commits the output, scores it again with
a shadow version when the model has one (shadow), archives or quarantines the input, and
writes the report; small inputs are worked on several at once (flight); label files are
matched to the predictions already written (labels); a stop signal ends it cleanly
(stopping).

May import: the ground, scorer.data, scorer.r, scorer.monitoring, scorer.models. Never
scorer.online or scorer.twin.
"""

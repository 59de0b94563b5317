"""Never silently wrong, never a file lost: the blob-level cases an adversarial trial found
(issue 26), each with the test that failed before its fix.

Real Azurite and real R, as everywhere; where a case needs Blob Storage to misbehave
(a stalled request, a job paused past its lease), the loopback storage proxy of
tests/storage_proxy.py stands between the job and Azurite.
"""

from __future__ import annotations

import json

import pytest

ROW = b"wt,hp\n2.6,110\n3.2,150\n2.9,95\n" + b"3.0,120\n" * 40
WITH_A_REJECT = ROW + b"lots,99\n"


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


# -- names scorer derives from an input's ----------------------------------------------


def test_an_input_named_as_rejected_rows_is_refused_and_never_takes_their_place(gamma):
    gamma.drop("g/x.csv", WITH_A_REJECT)
    gamma.run()
    rejected = gamma.read("output", "g/x.csv.rejected.csv")
    gamma.drop("g/x.csv.rejected.csv", ROW)  # what a user drops after fixing the rejected rows
    report = gamma.run()
    item = report.inputs[0]
    assert item.status == "quarantined" and "kept for the rejected rows" in item.error["message"]
    assert "x-fixed.csv" in item.error["what_to_do"]
    assert gamma.read("output", "g/x.csv.rejected.csv") == rejected  # x.csv's own, untouched
    assert gamma.read("quarantine", "g/x.csv.rejected.csv") == ROW  # nothing lost


def test_a_later_clean_input_never_deletes_what_a_derived_name_wrote(gamma):
    gamma.drop("g/y.csv.rejected.csv", ROW)
    gamma.run()
    gamma.drop("g/y.csv", ROW)  # clean: its run deletes y.csv's stale rejected rows, if any
    assert gamma.run().inputs[0].status == "scored"
    assert gamma.read("quarantine", "g/y.csv.rejected.csv") == ROW
    assert "g/y.csv.rejected.csv" not in gamma.names("output")


def test_a_quarantine_note_never_overwrites_an_input_quarantined_under_its_name(gamma):
    gamma.drop("g/b.csv.error.json", b'{"not": "an input"}')
    assert gamma.run().inputs[0].status == "quarantined"  # a .json file is not scored
    gamma.drop("g/b.csv", b"wt,hp\nheavy,fast\n")  # quarantined too: no number anywhere
    report = gamma.run()
    assert report.inputs[0].status == "quarantined"
    assert gamma.read("quarantine", "g/b.csv.error.json") == b'{"not": "an input"}'  # the only copy, kept
    moved = report.inputs[0].quarantined_to.split("/", 1)[1]
    assert moved != "g/b.csv" and moved.startswith("g/b.") and moved.endswith(".csv")
    note = json.loads(gamma.read("quarantine", moved + ".error.json"))
    assert note["input"].endswith("g/b.csv") and "should hold numbers" in note["message"]

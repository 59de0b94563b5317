"""A corpus of awkward inputs: each ends scored, partly rejected or quarantined with a
clear message; none ends in a traceback or a lost file.

Cases that read fine are checked for the rows they score; cases that cannot be read
are checked for the message in the report and in the quarantine note.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HEADER = "wt,hp\n"
ROWS = "2.6,110\n3.2,150\n2.9,95\n"


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# name, bytes, expected status, rows scored (or words in the message when quarantined)
CORPUS = [
    ("utf8-bom.csv", codecs.BOM_UTF8 + (HEADER + ROWS).encode(), "scored", 3),
    ("crlf.csv", (HEADER + ROWS).replace("\n", "\r\n").encode(), "scored", 3),
    ("semicolons.csv", b"wt;hp\n2.6;110\n3.2;150\n", "scored", 2),
    ("tabs.csv", b"wt\thp\n2.6\t110\n3.2\t150\n", "scored", 2),
    ("quoted.csv", b'"wt","hp"\n"2.6","110"\n"3.2","150"\n', "scored", 2),
    ("extra-columns.csv", b"id,wt,note,hp\n1,2.6,\"a, b\",110\n2,3.2,\"multi\nline\",150\n", "scored", 2),
    ("reordered.csv", b"hp,wt\n110,2.6\n150,3.2\n", "scored", 2),
    ("no-final-newline.csv", (HEADER + ROWS).rstrip("\n").encode(), "scored", 3),
    ("blank-lines.csv", (HEADER + "2.6,110\n\n\n3.2,150\n").encode(), "scored", 2),
    ("whitespace-numbers.csv", b"wt,hp\n 2.6 ,110\n3.2, 150\n" + b"2.9,95\n" * 20, "scored", 22),
    ("nan-inf.csv", b"wt,hp\nNaN,110\nInf,150\n-Inf,95\n" + b"2.9,95\n" * 20, "scored", 23),
    ("na-and-empty.csv", b"wt,hp\nNA,110\n,150\n" + b"2.9,95\n" * 20, "scored", 22),
    ("exponent.csv", b"wt,hp\n2.6e0,1.1e2\n", "scored", 1),
    ("huge-line.csv", (HEADER + "2.6,110\n" + "3.2," + "1" * 200_000 + "\n").encode(), "scored", 2),
    ("many-rows.csv.gz", gzip.compress((HEADER + "2.6,110\n" * 50_000).encode(), mtime=0), "scored", 50_000),
    ("ints.parquet", parquet(pa.table({"wt": [2, 3], "hp": [110, 150]})), "scored", 2),
    ("dictionary.parquet", parquet(pa.table({"wt": [2.6, 3.2], "hp": pa.array(["110", "150"]).dictionary_encode()})),
     "scored", 2),
    ("some-bad-values.csv", b"wt,hp\n2.6,lots\n" + b"2.9,95\n" * 20, "scored", 20),
    # quarantined
    ("utf16.csv", codecs.BOM_UTF16_LE + (HEADER + ROWS).encode("utf-16-le"), "quarantined", "UTF-16"),
    ("duplicate-columns.csv", b"wt,hp,wt\n1,2,3\n", "quarantined", "appear more than once"),
    # a header and no rows: an output of none, as R gives (issue 27; quarantined before)
    ("zero-rows.parquet", parquet(pa.table({"wt": pa.array([], pa.float64()), "hp": pa.array([], pa.float64())})),
     "scored", 0),
    ("only-header-no-newline.csv", b"wt,hp", "scored", 0),
    ("only-header.csv", b"wt,hp\n", "scored", 0),
    # issue 27: Excel's "sep=;" first line names the delimiter; .tsv is tab-separated; a date-time at midnight
    ("excel-sep-line.csv", b"sep=;\nwt;hp\n2.6;110\n3.2;150\n", "scored", 2),
    ("tabs.tsv", b"wt\thp\n2.6\t110\n3.2\t150\n", "scored", 2),
    ("blank-first-line.csv", b"\nwt,hp\n1,2\n", "quarantined", "first line is blank"),
    ("all-text.csv", b"wt,hp\nheavy,fast\nlight,slow\n", "quarantined", "should hold numbers"),
    ("mostly-bad.csv", b"wt,hp\n2.6,x\n3.2,y\n2.9,95\n", "quarantined", "rows (66.7%) were rejected"),
    ("unclosed-quote.csv", b'wt,hp\n"2.6,110\n3.2,150\n', "quarantined", "line 2, column 'wt'"),
    # issue 26: in the last column, an unclosed quote read every later line as its value (1 row scored)
    ("unclosed-quote-last-column.csv", b"wt,hp\n" + b"2.6,110\n" * 500 + b'3.2,"150\n' + b"2.6,110\n" * 500,
     "quarantined", "line 502, column 'hp': a quoted value opens there and is never closed"),
    ("text-after-a-closing-quote.csv", b'wt,hp\n2.6,"11"0\n3.2,150\n', "quarantined",
     "text follows the closing quote"),
    ("gzip-bomb.csv.gz", gzip.compress(b"wt,hp\n" + b"1,2\n" * 3_000_000, mtime=0), "quarantined",
     "SCORER_MAX_INPUT_BYTES"),
    ("zip-as-csv.csv", b"PK\x03\x04" + bytes(range(256)) * 10, "quarantined", "not a text file"),
    ("gzip-named-csv.csv", gzip.compress((HEADER + ROWS).encode(), mtime=0), "quarantined", "not a text file"),
    ("missing-column.parquet", parquet(pa.table({"wt": [2.6]})), "quarantined", "'hp'"),
    ("timestamps.parquet", parquet(pa.table({"wt": pa.array([1, 2], pa.timestamp("s")), "hp": [1, 2]})),
     "quarantined", "should hold numbers"),
]


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


@pytest.mark.parametrize("name,data,status,expect", CORPUS, ids=[c[0] for c in CORPUS])
def test_awkward_input(gamma, name, data, status, expect):
    blob = f"g/corpus/{name}"
    gamma.drop(blob, data)
    report = gamma.run(max_input_bytes=4 * 1024 * 1024)
    item = report.inputs[0]
    assert "Traceback" not in json.dumps(report.to_dict())
    assert gamma.names("input") == []  # never left behind, never lost
    assert item.status == status, item.error
    if status == "scored":
        assert item.rows_scored == expect
        assert gamma.names("archive") == [blob] and blob in gamma.names("output")
        if expect == 0:  # the header, and the prediction column, in the input's format
            out = gamma.read("output", blob)
            columns = pq.read_table(io.BytesIO(out)).column_names if blob.endswith(".parquet") else \
                out.decode().splitlines()[0].replace('"', "").split(",")
            assert columns == ["wt", "hp", "prediction"] and len(out.decode(errors="replace").splitlines()) <= 1 or \
                blob.endswith(".parquet")
    else:
        text = item.error["message"] + " " + item.error.get("what_to_do", "")
        assert expect in text, text
        assert blob in item.error["message"]  # the message names the file
        assert gamma.names("quarantine") == [blob, blob + ".error.json"]
        assert gamma.read("quarantine", blob) == data  # the input is kept as it came


@pytest.mark.parametrize("name", [
    "g/with space.csv", "g/quote\"d'.csv", "g/ünïcødé/数据.csv", "g/dots..in..name.csv", "g/semi;colon&amp.csv",
])
def test_awkward_blob_names_are_scored_to_the_same_name(gamma, name):
    gamma.drop(name, (HEADER + ROWS).encode())
    [stored] = gamma.names("input")
    assert stored == name
    report = gamma.run()
    assert report.inputs[0].status == "scored", report.inputs[0].error
    assert gamma.names("output") == [name] and gamma.names("archive") == [name]


def test_a_latin_1_file_is_read_and_written_in_its_encoding_when_the_setting_says_so(gamma):
    """Excel's plain "CSV" on Western European Windows is cp1252: refused as not UTF-8
    (naming SCORER_CSV_ENCODING), then read, and written back, in that encoding."""
    data = "wt;hp;note\n2,6;110;Müller\n3,2;150;Café\n".encode("cp1252")
    gamma.drop("g/excel.csv", data)
    first = gamma.run().inputs[0]
    assert first.status == "quarantined" and "SCORER_CSV_ENCODING" in first.error["what_to_do"]
    gamma.drop("g/excel.csv", data)
    item = gamma.run(csv_encoding="cp1252").inputs[0]
    assert item.status == "scored" and item.rows_scored == 2, item.error
    out = gamma.read("output", "g/excel.csv")
    assert "Müller".encode("cp1252") in out and "Müller".encode() not in out
    assert out.decode("cp1252").splitlines()[1].startswith('"2,6";"110";"Müller";')

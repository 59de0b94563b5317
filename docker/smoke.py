"""Build-time check that the trimmed image still does what the scoring job needs.

Runs in the final stage, as the image's user, after docker/slim.sh has removed
parts of R and of the Python packages: if a removal broke an import, a pyarrow
code path or an R package's namespace, the build fails here rather than in a
run in Azure. It is no substitute for tests/test_image.py, which scores a real
input against Azurite.
"""

import io
import sys
from importlib.metadata import version

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

table = pacsv.read_csv(io.BytesIO(b"x,level\n1.5,a\n2.5,b\n,a\n"))
sink = io.BytesIO()
pq.write_table(table, sink)
# read_table goes through pyarrow.dataset, ParquetFile does not: check both.
assert pq.read_table(io.BytesIO(sink.getvalue())).equals(table)
assert pq.ParquetFile(io.BytesIO(sink.getvalue())).read().equals(table)
assert pc.sum(pc.fill_null(table["x"], 0.0)).as_py() == 4.0
assert np.asarray(table["x"].fill_null(0.0)).sum() == 4.0
sink = io.BytesIO()
pacsv.write_csv(table, sink)
assert pa.array([1, None]).null_count == 1

import azure.identity  # noqa: E402,F401  (imported for the check only)
import azure.storage.blob  # noqa: E402,F401

import rpy2.robjects as ro  # noqa: E402

# Every installed R package must still load after R's docs and headers are gone;
# tcltk needs a display server the job never has.
packages = [p for p in ro.r["rownames"](ro.r["installed.packages"]()) if p != "tcltk"]
for name in packages:
    ro.r["loadNamespace"](name)
fit = ro.r["lm"](ro.Formula("y ~ x"), data=ro.DataFrame(
    {"x": ro.FloatVector([1.0, 2.0, 3.0]), "y": ro.FloatVector([2.0, 4.0, 6.0])}))
assert round(ro.r["coef"](fit)[1], 6) == 2.0

import scorer  # noqa: E402,F401

print(f"smoke: ok (scorer {version('scorer')}, R packages loaded: {len(packages)}, "
      f"python {sys.version.split()[0]})")

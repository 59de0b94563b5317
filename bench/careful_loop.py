"""Baseline for many small inputs: the loop a careful user would write, in one process.

For each CSV under input/<model>/ in Blob Storage: download it (one request), score it in
R (data.table's fread on the bytes, each factor made from its column with the model's own
levels, predict(), fwrite), upload the output under the same name (one request: a single
Put Blob), and delete the input (one request). Three requests per input, the fewest
that read, write and clear a file; one R session; no claims, no archive, no report.

    python bench/careful_loop.py CONNECTION_STRING INPUT_CONTAINER OUTPUT_CONTAINER MODEL.rds PREFIX TYPE
"""

import sys
import tempfile
from pathlib import Path

import rpy2.robjects as ro
from azure.storage.blob import BlobServiceClient

SCORE = r"""
suppressMessages(library(data.table))
function(m, text, out, type) {
  d <- fread(text = text)
  lev <- m$xlevels
  for (j in names(lev)) d[[j]] <- factor(d[[j]], levels = lev[[j]])
  d[, prediction := predict(m, d, type = type)]
  fwrite(d, out)
}
"""


def main() -> None:
    conn, in_container, out_container, model_path, prefix, ptype = sys.argv[1:]
    service = BlobServiceClient.from_connection_string(conn)
    inputs, outputs = service.get_container_client(in_container), service.get_container_client(out_container)
    score = ro.r(SCORE)
    model = ro.r["readRDS"](model_path)
    out = Path(tempfile.mkdtemp()) / "out.csv"
    n = 0
    for blob in inputs.list_blobs(name_starts_with=prefix):
        text = inputs.download_blob(blob.name).readall().decode()
        score(model, text, str(out), ptype)
        outputs.upload_blob(blob.name, out.read_bytes(), overwrite=True)
        inputs.delete_blob(blob.name)
        n += 1
    print(n)


if __name__ == "__main__":
    main()

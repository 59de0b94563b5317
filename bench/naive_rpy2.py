"""Baseline (c): the usual rpy2 approach, for comparison only.

Read the CSV with pandas, convert the whole frame with pandas2ri, call predict(),
write the result with pandas. This is what scorer avoids (its bridge hands R
NumPy buffers directly); it is here so the benchmark measures the difference.

    python bench/naive_rpy2.py MODEL.rds INPUT.csv OUTPUT.csv FACTOR_COLUMN...
"""

import sys

import pandas as pd
import rpy2.robjects as ro
from rpy2.robjects import pandas2ri
from rpy2.robjects.conversion import localconverter

model_path, inp, out, *factors = sys.argv[1:]
df = pd.read_csv(inp)
for col in factors:
    df[col] = df[col].astype(str).astype("category")
model = ro.r["readRDS"](model_path)
with localconverter(ro.default_converter + pandas2ri.converter):
    rdf = ro.conversion.get_conversion().py2rpy(df)
pred = ro.r["predict"](model, rdf, type="response")
df["prediction"] = list(pred)
df.to_csv(out, index=False)

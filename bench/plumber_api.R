# The plumber API bench/serving.py measures scorer serve against: what an R user writes
# to serve a glm over HTTP, as in the Cloud Run examples (readRDS at start, predict() in a
# @post handler, jsonlite in and out).
#
#   MODEL=glm.rds Rscript -e 'plumber::plumb("bench/plumber_api.R")$run(port = 8001)'
m <- readRDS(Sys.getenv("MODEL"))

#* Score rows sent as a JSON array of objects
#* @post /predict
#* @serializer json list(digits = NA)
function(req) {
  d <- jsonlite::fromJSON(req$postBody)
  d$rank <- factor(d$rank, levels = m$xlevels$rank)
  list(predictions = unname(predict(m, d, type = "response")))
}

# R as the oracle (tests/test_differential.py, issue 27): reads requests, one JSON line
# each, from stdin; for each, reads a CSV file as R would (every column as text), types
# each model input as the model was trained, the rules scorer documents written again in
# R (docs/contract.md, "Input formats"), and predicts with R's own predict(). Writes one
# CSV per request: each row's status (ok: predicted; invalid: a value that does not fit
# its column's type; refused: R's predict() would not predict the row; refused_alone: a
# row with a missing value R would not predict alone, though beside others it may answer
# NA), then the predictions. Answers "done" on stdout when it is written.
#
# A request: {"model": rds, "csv": path, "out": path, "schema": [{name, class, levels, tz}],
#             "type": type or null, "args": {name: value}, "packages": [...]}
suppressMessages(library(jsonlite))
Sys.setenv(TZ = "UTC")

na_like <- function(x) is.na(x) | x == "" | x == "NA"

as_type <- function(x, f) {
  # returns list(value = typed column, invalid = logical rows whose text does not fit)
  cls <- f$class
  missing <- na_like(x)
  if (!is.null(f$levels) && length(f$levels)) {
    if ("NA" %in% f$levels) missing <- is.na(x) | x == ""  # a level spelled NA is that level
    v <- factor(ifelse(missing, NA, x), levels = f$levels, ordered = identical(cls, "ordered"))
    return(list(value = v, invalid = !missing & is.na(v)))
  }
  if (cls %in% c("numeric", "integer")) {
    t <- trimws(x)
    v <- suppressWarnings(as.numeric(ifelse(missing, NA, t)))
    ok <- grepl("^[+-]?((\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?|Inf|NaN)$", t)
    return(list(value = v, invalid = !missing & !ok))
  }
  if (cls == "logical") {
    t <- trimws(x)
    v <- ifelse(t %in% c("TRUE", "True", "true", "T", "1"), TRUE, ifelse(t %in% c("FALSE", "False", "false", "F", "0"),
                                                                        FALSE, NA))
    return(list(value = v, invalid = !missing & is.na(v)))
  }
  if (cls == "Date") {
    t <- sub("^(\\d{4}-\\d{2}-\\d{2})[T ]00:00(:00(\\.0+)?)?(Z|[+-]00:?00)?$", "\\1", trimws(x))
    ok <- grepl("^\\d{4}-\\d{2}-\\d{2}$", t)
    v <- as.Date(ifelse(missing | !ok, NA, t), optional = TRUE)
    return(list(value = v, invalid = !missing & is.na(v)))
  }
  if (cls == "POSIXct") {
    tz <- if (is.null(f$tz)) "UTC" else f$tz
    one <- function(t) {  # ISO 8601: with a zone, that instant; without, wall-clock time in tz
      if (is.na(t)) return(NA_real_)
      t <- sub("Z$", "+0000", sub("([+-]\\d{2}):?(\\d{2})$", "\\1\\2", sub("T", " ", t)))
      zoned <- grepl("[+-]\\d{4}$", t)
      forms <- if (zoned) c("%Y-%m-%d %H:%M:%OS%z", "%Y-%m-%d %H:%M%z") else
        c("%Y-%m-%d %H:%M:%OS", "%Y-%m-%d %H:%M", "%Y-%m-%d")
      for (form in forms) {
        v <- as.POSIXct(t, format = form, tz = if (zoned) "UTC" else tz)
        if (!is.na(v) && format(v, form, tz = if (zoned) "UTC" else tz) != "" &&
            nchar(t) == nchar(sub("\\.\\d+", "", t)) || !is.na(v)) return(as.numeric(v))
      }
      NA_real_
    }
    t <- ifelse(missing, NA, trimws(x))
    v <- as.POSIXct(vapply(t, one, 0, USE.NAMES = FALSE), origin = "1970-01-01", tz = tz)
    return(list(value = v, invalid = !missing & is.na(v)))
  }
  if (cls == "any") {  # as scorer types a column whose type R does not record: numbers if all are
    t <- trimws(x[!missing])
    if (all(grepl("^[+-]?((\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?|Inf|NaN)$", t))) {
      return(list(value = suppressWarnings(as.numeric(ifelse(missing, NA, trimws(x)))), invalid = rep(FALSE, length(x))))
    }
  }
  list(value = ifelse(missing, NA, x), invalid = rep(FALSE, length(x)))  # character
}

columns <- function(p, n) {
  if (is.list(p) && !is.data.frame(p)) p <- as.data.frame(p, optional = TRUE)
  # one row: a method that builds its matrix with x[i, ] gives a vector of the row's values
  if (n == 1L && is.atomic(p) && is.null(dim(p)) && length(p) > 1L) p <- matrix(p, nrow = 1L, dimnames = list(NULL, names(p)))
  if (is.data.frame(p) || is.matrix(p)) {
    p <- as.data.frame(p, optional = TRUE)
    names(p) <- paste0("prediction_", names(p))
    return(p)
  }
  data.frame(prediction = if (is.factor(p)) as.character(p) else as.vector(p))
}

answer <- function(req) {
  for (p in req$packages) suppressMessages(library(p, character.only = TRUE))  # as a user attaches them
  model <- readRDS(req$model)
  # a one-column file writes a missing value as a line of "": a row (as scorer, Python and Arrow read it)
  d <- read.csv(req$csv, colClasses = "character", na.strings = character(), check.names = FALSE,
                blank.lines.skip = FALSE)
  n <- nrow(d)
  schema <- req$schema
  invalid <- rep(FALSE, n)
  typed <- list()
  for (i in seq_len(nrow(schema))) {
    f <- as.list(schema[i, ])
    f$levels <- schema$levels[[i]]
    got <- as_type(d[[f$name]], f)
    typed[[f$name]] <- got$value
    invalid <- invalid | got$invalid
  }
  nd <- as.data.frame(typed, optional = TRUE, stringsAsFactors = FALSE)
  args <- c(list(model, nd), if (!is.null(req$type)) list(type = req$type), req$args)
  status <- ifelse(invalid, "invalid", "ok")
  out <- NULL
  one <- function(rows) {
    a <- args
    a[[2]] <- nd[rows, , drop = FALSE]
    p <- suppressWarnings(do.call(predict, a))
    cols <- columns(p, length(rows))
    if (nrow(cols) != length(rows)) stop("rows dropped")
    cols
  }
  finite <- vapply(seq_len(n), function(i) all(vapply(nd[i, , drop = FALSE], function(v)
    !is.numeric(v) || is.finite(v) || is.na(v), TRUE)), TRUE)
  # every valid row at once, as predict() is given a file; where R refuses that call,
  # the complete rows together, and a row with a missing or infinite value alone
  valid <- which(!invalid)
  whole <- if (length(valid)) tryCatch(one(valid), error = function(e) NULL)
  complete <- if (is.null(whole)) which(!invalid & stats::complete.cases(nd) & finite) else integer()
  together <- if (length(complete)) tryCatch(one(complete), error = function(e) NULL)
  alone <- if (is.null(together)) complete else integer()
  out <- if (!is.null(whole)) whole else together
  rows <- if (!is.null(whole)) valid else if (is.null(together)) integer() else complete
  rest <- if (is.null(whole)) which(!invalid & !(stats::complete.cases(nd) & finite)) else integer()
  for (r in c(alone, rest)) {
    p <- tryCatch(one(r), error = function(e) NULL)
    # a row with a missing value that R refuses alone may get NA beside a complete row
    # (multinom drops it and answers NA): either answer is R's
    if (is.null(p)) status[[r]] <- if (r %in% rest) "refused_alone" else "refused" else {
      out <- if (is.null(out)) p else rbind(out, p)
      rows <- c(rows, r)
    }
  }
  res <- data.frame(row = seq_len(n), status = status, stringsAsFactors = FALSE)
  if (!is.null(out)) {
    num <- vapply(out, is.numeric, TRUE)
    out[num] <- lapply(out[num], function(x) ifelse(is.na(x) & !is.nan(x), NA, formatC(x, digits = 17, format = "g")))
    out$row <- rows
    res <- merge(res, out, by = "row", all.x = TRUE, sort = TRUE)
  }
  write.csv(res, req$out, row.names = FALSE, na = "")
}

con <- file("stdin", open = "r")
while (length(line <- readLines(con, n = 1L)) > 0L) {
  req <- fromJSON(line)
  failed <- tryCatch({ answer(req); NULL }, error = function(e) conditionMessage(e))
  cat(if (is.null(failed)) "done" else paste("error:", gsub("\n", " ", failed)), "\n", sep = "")
  flush(stdout())
}

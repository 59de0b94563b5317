# R helpers for scorer. This file is fixed source: scorer sources it once and then
# calls these functions with arguments. No R text is ever built from data, file
# names, column names or model names.

scorer_base_packages <- function() {
  ip <- utils::installed.packages(fields = "Priority")
  unique(c(rownames(ip)[!is.na(ip[, "Priority"]) & ip[, "Priority"] == "base"], "base"))
}

# An element of a list-based model by exact name; NULL for anything else (S4
# objects, atomic vectors): `$` would partially match or fail.
scorer_get <- function(x, name) {
  # .subset2, not [[: some classes give [[ a meaning of their own (partykit's party objects)
  if (is.list(x) && !is.null(names(x)) && name %in% names(x)) .subset2(x, name) else NULL
}

# Every class a model is, most specific first: an S4 object's class() names one class,
# and its predict() method may be its superclass's (lme4's lmerMod is a merMod).
scorer_classes <- function(model) {
  if (isS4(model)) methods::is(model) else class(model)
}

# The function predict() is called through for `model`: an S4 generic from the package
# that defines the model's class, when that generic has a method for it (kernlab's
# predict for ksvm, which stats::predict's S3 dispatch never finds); else
# stats::predict. NULL when neither has a method: the model cannot be scored.
scorer_predict_function <- function(model) {
  pkg <- attr(class(model), "package")
  if (isS4(model) && !is.null(pkg) && requireNamespace(pkg, quietly = TRUE)) {
    ns <- asNamespace(pkg)
    if (exists("predict", envir = ns, inherits = FALSE)) {
      g <- get("predict", envir = ns)
      if (methods::is(g, "standardGeneric") &&
          !is.null(methods::selectMethod("predict", class(model), optional = TRUE, fdef = g)))
        return(g)
    }
  }
  for (cl in scorer_classes(model)) {
    if (!is.null(utils::getS3method("predict", cl, optional = TRUE))) return(stats::predict)
  }
  NULL
}

# -- which packages a model needs ---------------------------------------------------

# Installed packages that register (or export) a predict() method for one of
# `classes`, read from each package's NAMESPACE with R's own parser. Only packages
# whose NAMESPACE mentions "predict" are parsed.
scorer_method_packages <- function(classes) {
  found <- character()
  wanted <- paste0("predict.", classes)
  for (lib in .libPaths()) {
    for (pkg in list.files(lib)) {
      ns <- file.path(lib, pkg, "NAMESPACE")
      if (!file.exists(ns)) next
      if (!any(grepl("predict", readLines(ns, warn = FALSE), fixed = TRUE))) next
      info <- tryCatch(parseNamespaceFile(pkg, lib), error = function(e) NULL)
      if (is.null(info)) next
      m <- info$S3methods
      hit <- (nrow(m) > 0 && any(m[, 1] == "predict" & m[, 2] %in% classes)) ||
        any(wanted %in% info$exports)
      if (hit) found <- c(found, pkg)
    }
  }
  unique(found)
}

# The package whose predict() method serves the model's class: the first class
# (most specific) that has one.
scorer_predict_package <- function(model) {
  pkg <- attr(class(model), "package")  # an S4 class: the package that defines it
  if (isS4(model) && !is.null(pkg) && !pkg %in% c(".GlobalEnv", "methods")) return(pkg)
  for (cl in scorer_classes(model)) {
    m <- utils::getS3method("predict", cl, optional = TRUE)
    if (!is.null(m)) {
      env <- environment(m)
      return(if (!is.null(env) && isNamespace(env)) getNamespaceName(env) else NA_character_)
    }
    pkgs <- scorer_method_packages(cl)
    if (length(pkgs)) return(pkgs[[1]])
  }
  NA_character_
}

# Functions a model's formula calls (ns(), bs(), poly(), ...) that base R does not
# attach: the packages that export them, so that the job can attach them.
scorer_formula_packages <- function(model) {
  tt <- scorer_terms(model)
  if (is.null(tt)) return(character())
  expr <- attr(tt, "predvars")
  if (is.null(expr)) expr <- attr(tt, "variables")
  if (is.null(expr)) return(character())
  fns <- setdiff(unique(all.names(expr, functions = TRUE)), all.vars(expr))
  attached <- c("base", "stats", "utils", "methods", "graphics", "grDevices", "datasets")
  pkgs <- character()
  for (f in fns) {
    if (any(vapply(attached, function(p) f %in% getNamespaceExports(p), TRUE))) next
    candidates <- unique(c(loadedNamespaces(), "splines", "survival", "mgcv", "MASS", "stats4"))
    for (p in candidates) {
      if (requireNamespace(p, quietly = TRUE) && f %in% getNamespaceExports(p)) {
        pkgs <- c(pkgs, p)
        break
      }
    }
  }
  unique(pkgs)
}

# The packages a model needs: the one providing its predict method, those whose
# namespaces readRDS had to load (`loaded_before` is loadedNamespaces() taken before
# readRDS), and those its formula calls. Returns list(packages = named versions,
# top = the ones no other needed package depends on, attach = formula packages).
scorer_packages <- function(model, loaded_before) {
  base <- scorer_base_packages()
  pkgs <- c(setdiff(loadedNamespaces(), loaded_before), scorer_predict_package(model))
  attach <- scorer_formula_packages(model)
  pkgs <- unique(setdiff(stats::na.omit(c(pkgs, attach)), c(base, "compiler")))
  versions <- vapply(pkgs, function(p) {
    tryCatch(as.character(utils::packageVersion(p)), error = function(e) NA_character_)
  }, "")
  top <- pkgs
  if (length(pkgs) > 1) {
    db <- utils::installed.packages()
    known <- pkgs[pkgs %in% rownames(db)]
    deps <- tools::package_dependencies(known, db = db, recursive = TRUE,
                                        which = c("Depends", "Imports", "LinkingTo"))
    under <- unique(unlist(deps))
    top <- setdiff(pkgs, under)
  }
  list(packages = versions, top = top, attach = attach)  # base packages (splines) too: attached, not installed
}

# Every package the given ones need, recursively (to tell which packages an image
# that installs `listed` already has).
scorer_dependencies <- function(listed) {
  db <- utils::installed.packages()
  known <- rownames(db)[tolower(rownames(db)) %in% tolower(listed)]  # Debian names are lower case
  if (!length(known)) return(character())
  unique(c(known, unlist(tools::package_dependencies(known, db = db, recursive = TRUE,
                                                     which = c("Depends", "Imports", "LinkingTo")))))
}

# -- the input schema -------------------------------------------------------------------

scorer_terms <- function(model) {
  slot_terms <- if (isS4(model) && "terms" %in% methods::slotNames(model)) methods::slot(model, "terms")  # kernlab
  for (tt in list(scorer_get(model, "terms"), scorer_get(model, "Terms"), attr(model, "terms"), slot_terms)) {
    if (inherits(tt, "terms")) return(tt)
  }
  # a mixed model's terms with its random effects too (their variables are inputs)
  tt <- if (inherits(model, "merMod")) tryCatch(stats::terms(model, fixed.only = FALSE), error = function(e) NULL)
  if (!inherits(tt, "terms")) tt <- tryCatch(suppressWarnings(stats::terms(model)), error = function(e) NULL)
  if (inherits(tt, "terms")) tt else NULL
}

# The grouping factors of a mixed model (lme4's merMod, nlme's lme), as a data frame of
# the training values: inputs, and the only record of their levels.
scorer_groups <- function(model) {
  if (inherits(model, "merMod") && requireNamespace("lme4", quietly = TRUE)) {
    return(as.data.frame(getExportedValue("lme4", "getME")(model, "flist")))
  }
  g <- scorer_get(model, "groups")
  if (inherits(model, "lme") && is.data.frame(g)) return(g)
  NULL
}

# The data frame a model keeps of its training rows, raw: the model frame (lm, glm; a
# mixed model's frame), else glm's data argument; NULL when it keeps none. A model frame
# holds transformed terms (log(x)); `data` holds the raw columns (x, a date-time's zone).
scorer_training_frames <- function(model) {
  frames <- list()
  mf <- scorer_get(model, "model")
  if (is.null(mf) && isS4(model) && "frame" %in% methods::slotNames(model)) mf <- methods::slot(model, "frame")
  if (is.data.frame(mf)) frames[["model"]] <- mf
  for (part in c("data", "trainingData")) {  # glm, nlme's lme; caret's train
    d <- scorer_get(model, part)
    if (is.data.frame(d)) frames[[part]] <- d
  }
  frames
}

# Every record of factor levels a model family keeps, by variable: xlevels (lm,
# glm, caret, lda, ...), randomForest's forest$xlevels, gbm's var.levels, ranger's
# covariate.levels (respect.unordered.factors), and the model frame's factors.
scorer_xlevels <- function(model) {
  out <- list()
  add <- function(l) {
    for (v in names(l)) if (is.null(out[[v]]) && is.character(l[[v]])) out[[v]] <<- l[[v]]
  }
  add(scorer_get(model, "xlevels"))
  add(attr(model, "xlevels"))
  forest <- scorer_get(model, "forest")
  add(scorer_get(forest, "xlevels"))
  add(scorer_get(forest, "covariate.levels"))
  vn <- scorer_get(model, "var.names")
  vl <- scorer_get(model, "var.levels")
  vt <- scorer_get(model, "var.type")
  if (!is.null(vn) && !is.null(vl) && !is.null(vt)) {  # gbm: var.type > 0 marks a factor
    for (i in seq_along(vn)) if (vt[[i]] > 0 && is.null(out[[vn[[i]]]])) out[[vn[[i]]]] <- as.character(vl[[i]])
  }
  tables <- scorer_get(model, "tables")  # e1071's naiveBayes: a factor's table has its levels
  isnum <- scorer_get(model, "isnumeric")
  if (is.list(tables) && !is.null(isnum)) {
    for (v in names(tables)) if (!isTRUE(isnum[[v]]) && is.null(out[[v]])) out[[v]] <- dimnames(tables[[v]])[[2L]]
  }
  for (mf in scorer_training_frames(model)) {
    for (v in names(mf)) if (is.null(out[[v]]) && is.factor(mf[[v]])) out[[v]] <- levels(mf[[v]])
  }
  out
}

# The class scorer records for a raw column of the model frame.
scorer_column_class <- function(x) {
  if (inherits(x, "POSIXct")) "POSIXct" else if (inherits(x, "Date")) "Date"
  else if (is.ordered(x)) "ordered" else if (is.factor(x)) "factor"
  else if (is.character(x)) "character" else if (is.logical(x)) "logical"
  else if (is.numeric(x) && is.null(dim(x))) "numeric" else "any"
}

# The input schema of a model, as far as R exposes it:
#   list(names = <chr>, classes = <chr>, levels = <list of chr or NULL>, tz = <chr>)
# classes: numeric, integer, logical, factor, ordered, character, Date, POSIXct,
# "any" (a variable used through a transformation, e.g. log(x), whose raw type R
# does not record: numbers, or text R converts itself), or "unknown" (the model
# records the name only: ranger without respect.unordered.factors). A factor whose
# levels no record holds has levels NULL (publish asks for them). Returns NULL when
# the model exposes nothing.
scorer_schema <- function(model) {
  lv_all <- scorer_xlevels(model)
  frames <- scorer_training_frames(model)
  groups <- scorer_groups(model)
  tt <- scorer_terms(model)
  if (!is.null(tt)) {
    vars <- all.vars(stats::delete.response(tt))
    fit_call <- scorer_get(model, "call")
    off <- if (is.call(fit_call)) fit_call$offset else NULL
    if (!is.null(off)) vars <- unique(c(vars, all.vars(off)))  # offset = log(n): n is an input too
    dc <- attr(tt, "dataClasses")
  } else if (!is.null(scorer_get(model, "tables")) && !is.null(scorer_get(model, "isnumeric"))) {
    vars <- names(scorer_get(model, "tables"))  # e1071's naiveBayes: one table per variable
    dc <- ifelse(scorer_get(model, "isnumeric")[vars], "numeric", "factor")
    names(dc) <- vars
  } else if (is.data.frame(frames[["trainingData"]])) {  # caret's train with x and y
    vars <- setdiff(names(frames[["trainingData"]]), ".outcome")
    dc <- NULL
  } else {
    forest <- scorer_get(model, "forest")
    vars <- c(scorer_get(forest, "independent.variable.names"), scorer_get(model, "var.names"))
    if (!length(vars)) vars <- names(scorer_get(forest, "xlevels"))
    if (!length(vars)) return(NULL)
    dc <- NULL
  }
  if (!is.null(groups)) vars <- unique(c(vars, names(groups)))
  # a base R constant in a formula (sin(2 * pi * t)) is not an input, unless the data has it
  in_data <- unique(unlist(lapply(frames, names)))
  constant <- function(v) exists(v, envir = baseenv(), inherits = FALSE) && !is.function(get(v, envir = baseenv()))
  vars <- vars[!(vapply(vars, constant, TRUE) & !vars %in% in_data)]
  classes <- character(length(vars))
  lv <- vector("list", length(vars))
  tz <- character(length(vars))
  for (i in seq_along(vars)) {
    v <- vars[[i]]
    cl <- if (!is.null(dc) && v %in% names(dc)) unname(dc[[v]]) else if (is.null(tt)) "unknown" else "any"
    raw <- NULL
    if (!is.null(groups) && v %in% names(groups)) raw <- groups[[v]]
    for (f in frames) if (is.null(raw) && !is.null(f[[v]])) raw <- f[[v]]
    if (!is.null(raw) && cl %in% c("other", "any", "numeric", "character", "logical", "unknown")) {
      rc <- scorer_column_class(raw)
      if (rc != "any") cl <- rc
      if (rc == "POSIXct") {
        z <- attr(raw, "tzone")
        tz[[i]] <- if (is.null(z) || !nzchar(z[[1]])) "UTC" else z[[1]]
      }
      if (is.factor(raw) && is.null(lv_all[[v]])) lv_all[[v]] <- levels(raw)
    }
    if (cl %in% c("other")) cl <- "any"
    if (startsWith(cl, "nmatrix")) cl <- "matrix"
    if (!is.null(lv_all[[v]])) {
      lv[[i]] <- as.character(lv_all[[v]])
      if (cl %in% c("unknown", "any")) cl <- "factor"
    }
    if (cl == "unknown" && is.null(tt)) {
      forest <- scorer_get(model, "forest")
      xl <- scorer_get(forest, "xlevels")
      if (!is.null(xl) && is.numeric(xl[[v]])) cl <- "numeric"  # randomForest x/y: 0 marks a number
      vt <- scorer_get(model, "var.type")
      if (!is.null(vt) && v %in% scorer_get(model, "var.names")) {
        if (vt[[match(v, scorer_get(model, "var.names"))]] == 0) cl <- "numeric"
      }
    }
    if (cl == "POSIXct" && !nzchar(tz[[i]])) tz[[i]] <- "UTC"
    classes[[i]] <- cl
  }
  list(names = vars, classes = classes, levels = lv, tz = tz,
       grouping = if (is.null(groups)) character() else intersect(names(groups), vars))
}

# The variables of a model's response (time and status of Surv(time, status)): inputs of
# predict(type = "expected") for coxph.
scorer_response_vars <- function(model) {
  tt <- scorer_terms(model)
  if (is.null(tt) || !attr(tt, "response")) return(character())
  all.vars(attr(tt, "variables")[[attr(tt, "response") + 1L]])
}

# The two classes of a model that predicts the probability of the second one as a single
# number (glm's binomial and quasibinomial families, gbm's bernoulli): the response's
# factor levels when the model frame keeps them ("the first level denotes failure and all
# others success", ?glm), FALSE/TRUE for a logical response, else 0/1. NULL for any other
# model. Read by publish for the card's outcome (scorer.models.cards.outcome_spec).
scorer_binary_classes <- function(model) {
  fam <- tryCatch(stats::family(model)$family, error = function(e) NULL)
  bernoulli <- inherits(model, "gbm") && identical(tryCatch(model$distribution$name, error = function(e) NULL),
                                                   "bernoulli")
  if (!bernoulli && !(is.character(fam) && fam %in% c("binomial", "quasibinomial"))) return(NULL)
  # tryCatch: $ is an error on an S4 model (lme4's glmer)
  y <- tryCatch(if (is.data.frame(model$model)) model$model[[1L]] else NULL, error = function(e) NULL)
  if (is.factor(y)) {
    lev <- levels(y)
    return(c(lev[[1L]], if (length(lev) == 2L) lev[[2L]] else paste0("not ", lev[[1L]])))
  }
  if (is.logical(y)) return(c("FALSE", "TRUE"))
  c("0", "1")
}

# The classes of a classifier, in its own order, from where each family keeps them
# (randomForest $classes, rpart's ylevels, lda/multinom/nnet $lev, svm/naiveBayes $levels,
# caret $obsLevels, ranger $forest$levels, else a factor response in the model frame); NULL
# when none is found. A test prediction shows only the classes its made-up rows got.
scorer_class_levels <- function(model) {
  getters <- list(function(m) m$classes, function(m) attr(m, "ylevels"), function(m) m$lev,
                  function(m) m$levels, function(m) m$obsLevels, function(m) m$forest$levels,
                  function(m) if (is.data.frame(m$model) && is.factor(m$model[[1L]])) levels(m$model[[1L]]))
  for (get in getters) {
    lev <- tryCatch(get(model), error = function(e) NULL)
    if (is.character(lev) && length(lev) > 1L) return(lev)
  }
  NULL
}

# -- predict() arguments ------------------------------------------------------------------

# The formal arguments of the predict() method that serves `model`, and the
# choices of its `type` argument when the method declares them (c("link", ...)).
scorer_predict_formals <- function(model) {
  fun <- scorer_predict_function(model)
  if (is.null(fun)) return(NULL)
  if (methods::is(fun, "standardGeneric")) {  # an S4 method: its own arguments hide behind ...
    m <- methods::selectMethod("predict", class(model), fdef = fun)
    return(list(method = paste0("predict (S4, ", attr(class(model), "package"), ")"), names = c("object", "..."),
                type_choices = character()))
  }
  for (cl in scorer_classes(model)) {
    m <- utils::getS3method("predict", cl, optional = TRUE)
    if (!is.null(m)) {
      f <- formals(m)
      types <- if ("type" %in% names(f) && is.call(f$type) && identical(f$type[[1]], as.name("c")))
        vapply(as.list(f$type)[-1], as.character, "") else character()
      return(list(method = paste0("predict.", cl), names = names(f), type_choices = types))
    }
  }
  NULL
}

# -- scoring ----------------------------------------------------------------------------

# A list of equal-length parts (MASS::lda's class, posterior and x) as one data
# frame: vectors keep their name, a matrix's columns become <part>_<column>.
scorer_list_table <- function(out, n) {
  cols <- list()
  for (nm in names(out)) {
    part <- out[[nm]]
    if (is.matrix(part) && nrow(part) == n) {
      cn <- colnames(part)
      if (is.null(cn)) cn <- as.character(seq_len(ncol(part)))
      for (j in seq_len(ncol(part))) cols[[paste0(nm, "_", cn[[j]])]] <- part[, j]
    } else if (is.atomic(part) && is.null(dim(part)) && length(part) == n) {
      cols[[nm]] <- part
    } else {
      sizes <- vapply(out, function(p) if (is.matrix(p)) paste0(nrow(p), "x", ncol(p)) else as.character(length(p)), "")
      stop("predict() returned a list whose parts are not one value per row: ",
           paste0(names(out), " (", sizes, ")", collapse = ", "),
           "; publish with --output-columns naming the parts to keep, or score with an R function")
    }
  }
  as.data.frame(cols, stringsAsFactors = FALSE, optional = TRUE)
}

# scorer_predict_function, once per class (one call to R per request must stay cheap)
scorer_fun_cache <- new.env(parent = emptyenv())
scorer_predict_fun_cached <- function(model) {
  key <- paste(class(model), collapse = "/")
  fun <- scorer_fun_cache[[key]]
  if (is.null(fun)) {
    fun <- scorer_predict_function(model)
    if (is.null(fun)) fun <- stats::predict  # let predict() say what it cannot do
    assign(key, fun, envir = scorer_fun_cache)
  }
  fun
}

# predict() on the data frame scorer_frame builds from the columns Python hands over
# (one call per batch or request; call: list(type, other arguments)), with results that
# are not plain vectors, matrices or data frames unwrapped to one: ranger's prediction
# object, list(fit = , se.fit = ), and lists of equal-length parts. Warnings are
# collected, not printed. Returns the result as scorer_columns does, then the warnings:
# list(columns, names, kinds, tz, warnings).
scorer_predict <- function(model, cols, nrows, shape, call) {
  newdata <- scorer_frame(cols, nrows, shape)
  # a model whose predict() draws random numbers (ranger's standard errors): R's seed set
  # from the input's name, so that a file scored again is scored the same
  if (length(call) >= 3L && !is.null(call[[3L]])) set.seed(call[[3L]])
  warned <- character()
  type <- call[[1L]]
  call_args <- c(list(model, newdata), if (is.null(type)) list() else list(type = type), call[[2L]])
  fun <- scorer_predict_fun_cached(model)
  out <- withCallingHandlers(
    do.call(fun, call_args),
    warning = function(w) {
      warned <<- c(warned, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  n <- nrow(newdata)
  if (inherits(out, "ranger.prediction")) {  # type = "se": the standard errors beside the predictions
    se <- .subset2(out, "se")
    out <- if (!is.null(se) && length(se) == n) data.frame(fit = out$predictions, se = se) else out$predictions
  }
  # e1071's svm: probabilities (probability = TRUE) and decision values (decision.values =
  # TRUE) are attributes of the class vector: columns beside it, never dropped
  extra <- list()
  for (a in c("probabilities", "decision.values")) {
    part <- attr(out, a)
    if (is.matrix(part) && nrow(part) == n) {
      attr(out, a) <- NULL
      extra[[a]] <- part
    }
  }
  if (length(extra)) out <- c(list(class = out), extra)
  # a 3-d array (pls: rows x responses x components): one column per response and component
  if (is.array(out) && length(dim(out)) == 3L && dim(out)[[1L]] == n && prod(dim(out)[-1L]) == 1L) {
    out <- as.vector(out)  # one response, one number of components (ncomp = 2): a vector
  }
  if (is.array(out) && length(dim(out)) == 3L && dim(out)[[1L]] == n) {
    dn <- dimnames(out)
    r <- if (is.null(dn[[2L]])) as.character(seq_len(dim(out)[[2L]])) else dn[[2L]]
    k <- if (is.null(dn[[3L]])) as.character(seq_len(dim(out)[[3L]])) else dn[[3L]]
    out <- matrix(out, nrow = n, dimnames = list(NULL, paste0(rep(r, times = length(k)), "_", rep(k, each = length(r)))))
  }
  if (is.list(out) && !is.data.frame(out) && !is.null(out$fit)) {
    fit <- out$fit
    if (!is.null(out$se.fit) && is.null(dim(fit))) out <- data.frame(fit = fit, se.fit = out$se.fit)
    else out <- fit
  }
  if (is.list(out) && !is.data.frame(out)) out <- scorer_list_table(out, n)
  # one row: predict() methods that build a matrix with x[i, ] drop it to a vector of
  # the row's values (multinom's and polr's probabilities), a row it still is
  if (n == 1L && is.atomic(out) && is.null(dim(out)) && length(out) > 1L)
    out <- matrix(out, nrow = 1L, dimnames = list(NULL, names(out)))
  if (is.array(out) && length(dim(out)) == 1L) out <- as.vector(out)
  if (is.array(out) && length(dim(out)) > 2L) stop("predict() returned an array of more than 2 dimensions")
  if (is.matrix(out) && ncol(out) == 1L && is.null(colnames(out))) out <- out[, 1]  # nnet: one unnamed column
  if (is.matrix(out) && is.null(colnames(out))) {
    # survreg's quantiles for p = c(0.1, 0.5, 0.9): the columns take the values of the one
    # vector argument of their number; otherwise their numbers
    vec <- Filter(function(a) is.atomic(a) && length(a) == ncol(out) && length(a) > 1L, call[[2L]])
    colnames(out) <- if (length(vec) == 1L) as.character(vec[[1L]]) else as.character(seq_len(ncol(out)))
  }
  if (is.data.frame(out)) {
    out <- lapply(out, function(col) if (is.factor(col) || inherits(col, c("Date", "POSIXct", "difftime"))) col
                  else if (is.matrix(col)) as.vector(col) else col)
    out <- as.data.frame(out, stringsAsFactors = FALSE, optional = TRUE)
  }
  c(scorer_columns(out), list(warned))
}

# The data frame predict() gets, built from the plain vectors Python hands over: one
# call, rather than one per attribute. shape: list(names, kinds, levels, ordered, tz),
# with kinds numeric, logical, factor, date, posixct, character (scorer.data.frames.RColumn)
# and levels the factor levels (NULL otherwise).
scorer_frame <- function(cols, nrows, shape) {
  names <- shape[[1L]]; kinds <- shape[[2L]]; levels <- shape[[3L]]; ordered <- shape[[4L]]; tz <- shape[[5L]]
  for (i in seq_along(cols)) {
    k <- kinds[[i]]
    if (k == "factor") {
      attr(cols[[i]], "levels") <- levels[[i]]
      class(cols[[i]]) <- if (ordered[[i]]) c("ordered", "factor") else "factor"
    } else if (k == "date") {
      class(cols[[i]]) <- "Date"
    } else if (k == "posixct") {  # seconds since 1970-01-01 UTC, shown in the model's time zone
      attr(cols[[i]], "tzone") <- tz[[i]]
      class(cols[[i]]) <- c("POSIXct", "POSIXt")
    }
  }
  structure(cols, names = names, row.names = c(NA_integer_, -nrows), class = "data.frame")
}

# A result (vector, matrix or data frame) as plain columns for Python, in one call:
# list(columns, names, kinds, time zones). Factors become their labels; dates days and
# date-times seconds since 1970 (with their time zone); difftimes numbers in their own
# units (a 1-hour difftime in hours is 1; it used to be written as 3600000000 microseconds).
scorer_columns <- function(out) {
  if (is.data.frame(out)) {
    cols <- as.list(out)
    names <- names(out)
  } else if (is.matrix(out)) {
    cols <- lapply(seq_len(ncol(out)), function(j) out[, j])
    names <- colnames(out)
  } else {
    cols <- list(out)
    names <- ""
  }
  kinds <- character(length(cols))
  tz <- character(length(cols))
  for (i in seq_along(cols)) {
    x <- cols[[i]]
    if (is.factor(x)) {
      cols[[i]] <- as.character(x)
      kinds[i] <- "character"
    } else if (inherits(x, "Date")) {
      cols[[i]] <- floor(as.numeric(x))
      kinds[i] <- "date"
    } else if (inherits(x, "POSIXct")) {
      zone <- attr(x, "tzone")
      tz[i] <- if (length(zone) && nzchar(zone[[1]])) zone[[1]] else "UTC"
      cols[[i]] <- as.numeric(x)
      kinds[i] <- "posixct"
    } else if (inherits(x, "difftime")) {  # a number in its own units, as write.csv() writes it
      cols[[i]] <- as.numeric(x)
      kinds[i] <- "double"
    } else if (typeof(x) %in% c("logical", "integer", "double", "character")) {
      cols[[i]] <- as.vector(x)  # attributes (names, dim) dropped: the values only
      kinds[i] <- typeof(x)
    } else {
      kinds[i] <- typeof(x)
    }
  }
  list(cols, as.character(names), kinds, tz)
}

# -- R scoring functions (a script that defines score(data, ...)) ------------------------

# Packages a script uses: library(), require(), requireNamespace(), loadNamespace() and
# pkg::f / pkg:::f, found by walking R's parse of the script (never by matching text).
scorer_script_packages <- function(exprs) {
  found <- character()
  walk_parts <- function(parts) {
    for (i in seq_along(parts)) {
      # an empty argument (the default-less formal of a function) is the empty symbol
      if (is.symbol(parts[[i]]) && !nzchar(as.character(parts[[i]]))) next
      walk(parts[[i]])
    }
  }
  walk <- function(e) {
    if (is.call(e)) {
      f <- e[[1]]
      if (is.symbol(f) && as.character(f) %in% c("::", ":::") && length(e) >= 2) {
        found <<- c(found, as.character(e[[2]]))
      }
      if (is.symbol(f) && as.character(f) %in% c("library", "require", "requireNamespace", "loadNamespace") &&
          length(e) >= 2 && (is.symbol(e[[2]]) || is.character(e[[2]]))) {
        found <<- c(found, as.character(e[[2]]))
      }
      walk_parts(as.list(e))
    } else if (is.expression(e) || is.list(e) || is.pairlist(e)) {
      walk_parts(as.list(e))
    }
  }
  walk(exprs)
  setdiff(unique(found), "")
}

# Parse and evaluate a script in a fresh environment, from the directory that holds it
# (so that it can read the files published with it). Returns list(env, packages, error,
# args): error is R's message (with the file, line and column for a syntax error).
scorer_load_script <- function(path) {
  exprs <- tryCatch(parse(file = path, keep.source = TRUE), error = function(e) e)
  if (inherits(exprs, "error")) {
    return(list(error = paste("the script does not parse:", conditionMessage(exprs))))
  }
  pkgs <- scorer_script_packages(exprs)
  env <- new.env(parent = globalenv())
  old <- setwd(dirname(path))
  on.exit(setwd(old), add = TRUE)
  where <- character()
  at <- 0L
  failed <- tryCatch(withCallingHandlers({
    for (at in seq_along(exprs)) eval(exprs[[at]], env)
    NULL
  }, error = function(e) where <<- grep(basename(path), limitedLabels(sys.calls()), value = TRUE, fixed = TRUE)),
  error = function(e) conditionMessage(e))
  if (!is.null(failed)) {
    # A top-level call (stop() in the script itself) has no source reference on the
    # stack; the expression being evaluated has one.
    refs <- attr(exprs, "srcref")
    if (!length(where) && at >= 1L && at <= length(refs)) {
      where <- paste0(basename(path), "#", refs[[at]][[1L]])
    }
    return(list(error = paste0("running the script failed: ", failed,
                               if (length(where)) paste0(" (at ", where[[length(where)]], ")") else ""),
                packages = pkgs))
  }
  if (!exists("score", envir = env, inherits = FALSE) || !is.function(get("score", envir = env))) {
    return(list(error = "the script defines no function score(data, ...)", packages = pkgs))
  }
  list(env = env, packages = pkgs, args = names(formals(get("score", envir = env))))
}

# score(data, <params>) for a loaded script, after set.seed(seed): R's warnings
# collected; an error stopped with R's message and where in the script it happened
# (file#line). Returns list(value = <data frame>, warnings = <chr>).
scorer_call_score <- function(env, data, params, path, seed) {
  warned <- character()
  where <- character()
  old <- setwd(dirname(path))
  on.exit(setwd(old), add = TRUE)
  set.seed(seed)
  out <- tryCatch(withCallingHandlers(
    do.call(get("score", envir = env), c(list(data), params)),
    warning = function(w) {
      # options(warn = 2) in the script: R turns the warning into an error once this
      # handler returns without muffling it
      if (getOption("warn") >= 2) return(invisible())
      warned <<- c(warned, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    error = function(e) where <<- grep(basename(path), limitedLabels(sys.calls()), value = TRUE, fixed = TRUE)),
    error = function(e) structure(list(message = conditionMessage(e)), class = "scorer_failed"))
  if (inherits(out, "scorer_failed")) {
    stop(paste0(out$message, if (length(where)) paste0(" (at ", where[[length(where)]], ")") else ""), call. = FALSE)
  }
  not_a_frame <- function(e = NULL) {
    stop(paste0("score() returned ", paste(class(out), collapse = "/"),
                ", which is not a data frame and cannot be turned into one"), call. = FALSE)
  }
  # only data (a data frame, a list of columns, a matrix, a vector): a function or an
  # environment is a mistake, whatever as.data.frame methods a package may have added
  if (!(is.data.frame(out) || is.list(out) || is.atomic(out)) || is.null(out)) not_a_frame()
  out <- tryCatch({
    if (!is.data.frame(out)) out <- as.data.frame(out, stringsAsFactors = FALSE)
    out <- lapply(out, function(col) if (is.matrix(col)) as.vector(col) else col)
    as.data.frame(out, stringsAsFactors = FALSE, optional = TRUE)
  }, error = not_a_frame)
  list(value = out, warnings = warned)
}

# Each package's installed version; NA for one that is not installed.
scorer_package_versions <- function(pkgs) {
  vapply(pkgs, function(p) tryCatch(as.character(utils::packageVersion(p)), error = function(e) NA_character_), "")
}

# -- drift: the data a model was fitted on -----------------------------------------------

# The rows a model was fitted on, when it keeps them: glm's `data` argument, else the
# model frame lm and glm keep (their model = TRUE default). Only the named variables
# that are plain columns there (a model frame holds log(x), not x). NULL when the model
# keeps neither. Returns list(frame = <data.frame>, part = "data" | "model").
scorer_reference_frame <- function(model, vars) {
  if (!is.list(model) || is.object(model) && isS4(model)) return(NULL)
  for (part in c("data", "model")) {
    d <- .subset2(model, part)
    if (is.data.frame(d) && nrow(d) > 0L) {
      keep <- intersect(vars, names(d))
      if (length(keep)) return(list(frame = d[keep], part = part))
    }
  }
  NULL
}

# -- the process is the job's ------------------------------------------------------------

# quit() and q() made errors: a model's code (a function kept in the model object) or an
# R function that calls them would end the job's process at once, with exit status 0, no
# report and its input left leased (issue 26). As errors, the input fails with this
# message. Called once when R starts; base::quit is the same binding.
scorer_guard_quit <- function() {
  refuse <- function(...) {
    stop("the model's code called quit(), which would end the scoring job; scorer does not allow it. ",
         "Remove the call from the model or function and publish it again.", call. = FALSE)
  }
  env <- baseenv()
  for (name in c("q", "quit")) {
    unlockBinding(name, env)
    assign(name, refuse, envir = env)
    lockBinding(name, env)
  }
  invisible(NULL)
}

# R helpers for scorer. This file is fixed source: scorer sources it once and then
# calls these functions with arguments. No R text is ever built from data, file
# names, column names or model names.

# Classes whose package R cannot find from the object alone (their predict method
# lives in a namespace that readRDS does not load by itself).
scorer_known_packages <- c(
  randomForest = "randomForest", randomForest.formula = "randomForest",
  ranger = "ranger", polr = "MASS", multinom = "nnet", nnet = "nnet",
  nnet.formula = "nnet", rpart = "rpart", gbm = "gbm", glmnet = "glmnet",
  cv.glmnet = "glmnet", svm = "e1071", svm.formula = "e1071",
  naiveBayes = "e1071", train = "caret", gam = "mgcv", bam = "mgcv",
  loess = "stats", glm = "stats", lm = "stats", nls = "stats"
)

scorer_base_packages <- c("base", "stats", "utils", "methods", "graphics",
                          "grDevices", "datasets", "grid", "splines", "tools",
                          "parallel", "stats4", "tcltk", "compiler")

# The packages a model needs: those its classes are known to come from, those whose
# namespaces readRDS had to load (`loaded_before` is loadedNamespaces() taken before
# readRDS), and those that provide a predict method for one of its classes.
scorer_packages <- function(model, loaded_before) {
  pkgs <- setdiff(loadedNamespaces(), loaded_before)
  cls <- class(model)
  pkgs <- c(pkgs, unname(scorer_known_packages[cls[cls %in% names(scorer_known_packages)]]))
  for (cl in cls) {
    m <- utils::getS3method("predict", cl, optional = TRUE)
    if (!is.null(m)) {
      env <- environment(m)
      if (!is.null(env) && isNamespace(env)) pkgs <- c(pkgs, getNamespaceName(env))
    }
  }
  pkgs <- unique(setdiff(pkgs, c(scorer_base_packages, "compiler")))
  versions <- vapply(pkgs, function(p) {
    v <- tryCatch(as.character(utils::packageVersion(p)), error = function(e) NA_character_)
    v
  }, "")
  versions
}

# Does any class of the model have a predict() method once its packages are loaded?
scorer_has_predict <- function(model) {
  for (cl in class(model)) {
    if (!is.null(utils::getS3method("predict", cl, optional = TRUE))) return(TRUE)
  }
  FALSE
}

scorer_levels_of <- function(model, var) {
  xl <- model$xlevels
  if (is.null(xl)) xl <- attr(model, "xlevels")
  if (!is.null(xl) && !is.null(xl[[var]])) return(as.character(xl[[var]]))
  mf <- model$model
  if (is.data.frame(mf) && !is.null(mf[[var]]) && is.factor(mf[[var]])) return(levels(mf[[var]]))
  NULL
}

# The input schema of a model, as far as R exposes it:
#   list(names = <chr>, classes = <chr>, levels = <list of chr or NULL>)
# classes are numeric, integer, logical, factor, ordered, character, Date, or "any"
# (a variable used through a transformation, e.g. log(x), whose raw type R does not
# record). Returns NULL when the model exposes nothing.
scorer_schema <- function(model) {
  tt <- tryCatch(stats::terms(model), error = function(e) NULL)
  if (!is.null(tt) && inherits(tt, "terms")) {
    vars <- all.vars(stats::delete.response(tt))
    dc <- attr(tt, "dataClasses")
    mf <- model$model
    classes <- character(length(vars))
    lv <- vector("list", length(vars))
    for (i in seq_along(vars)) {
      v <- vars[[i]]
      cl <- if (!is.null(dc) && v %in% names(dc)) unname(dc[[v]]) else "any"
      if (cl %in% c("other", "any") && is.data.frame(mf) && !is.null(mf[[v]])) {
        x <- mf[[v]]
        cl <- if (inherits(x, "Date")) "Date" else if (is.character(x)) "character"
              else if (is.logical(x)) "logical" else "any"
      }
      if (startsWith(cl, "nmatrix")) cl <- "any"
      if (cl %in% c("factor", "ordered")) {
        l <- scorer_levels_of(model, v)
        if (is.null(l)) cl <- "character" else lv[[i]] <- l
      }
      classes[[i]] <- cl
    }
    return(list(names = vars, classes = classes, levels = lv))
  }
  # randomForest fitted with x/y: levels per variable, 0 for numeric ones
  xl <- model$forest$xlevels
  if (!is.null(xl)) {
    vars <- names(xl)
    classes <- ifelse(vapply(xl, is.character, TRUE), "factor", "numeric")
    lv <- lapply(xl, function(l) if (is.character(l)) l else NULL)
    return(list(names = vars, classes = unname(classes), levels = unname(lv)))
  }
  # ranger: names always; levels only when fitted with respect.unordered.factors
  vars <- model$forest$independent.variable.names
  if (!is.null(vars)) {
    cov <- model$forest$covariate.levels
    lv <- lapply(vars, function(v) if (!is.null(cov[[v]])) as.character(cov[[v]]) else NULL)
    classes <- ifelse(vapply(lv, is.null, TRUE), "any", "factor")
    return(list(names = vars, classes = unname(classes), levels = lv))
  }
  NULL
}

# predict(), with results that are not plain vectors, matrices or data frames
# unwrapped to one: ranger's prediction object, and list(fit = , se.fit = ).
scorer_predict <- function(model, newdata, type) {
  out <- if (is.null(type)) stats::predict(model, newdata) else stats::predict(model, newdata, type = type)
  if (inherits(out, "ranger.prediction")) out <- out$predictions
  if (is.list(out) && !is.data.frame(out) && !is.null(out$fit)) {
    fit <- out$fit
    if (!is.null(out$se.fit) && is.null(dim(fit))) out <- data.frame(fit = fit, se.fit = out$se.fit)
    else out <- fit
  }
  if (is.array(out) && length(dim(out)) == 1L) out <- as.vector(out)
  if (is.array(out) && length(dim(out)) > 2L) stop("predict() returned an array of more than 2 dimensions")
  if (is.matrix(out) && is.null(colnames(out))) colnames(out) <- as.character(seq_len(ncol(out)))
  if (is.data.frame(out)) {
    out <- lapply(out, function(col) if (is.factor(col)) col else if (is.matrix(col)) as.vector(col) else col)
    out <- as.data.frame(out, stringsAsFactors = FALSE, optional = TRUE)
  }
  out
}


# Fits one model of every family scorer supports, on data that ships with R, and
# writes for each: <case>.rds (saveRDS), <case>.csv (new data to score) and
# <case>.expected.csv (R's own predict() on that data, columns named the way
# scorer names them). The tests compare scorer's output with these.
#
#   Rscript tests/r/fit_models.R OUTDIR
suppressMessages({library(MASS); library(rpart); library(nnet); library(randomForest); library(ranger)})
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1]]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
set.seed(42)

save_case <- function(name, model, newdata, type = NULL) {
  saveRDS(model, file.path(out, paste0(name, ".rds")))
  write.csv(newdata, file.path(out, paste0(name, ".csv")), row.names = FALSE, na = "")
  p <- if (is.null(type)) predict(model, newdata) else predict(model, newdata, type = type)
  if (inherits(p, "ranger.prediction")) p <- p$predictions
  if (is.matrix(p)) {
    p <- as.data.frame(p, optional = TRUE)
    names(p) <- paste0("prediction_", names(p))
  } else {
    p <- data.frame(prediction = if (is.factor(p)) as.character(p) else as.vector(p))
  }
  # 17 significant digits: the comparison is exact to double precision
  num <- vapply(p, is.numeric, TRUE)
  p[num] <- lapply(p[num], function(x) ifelse(is.na(x), NA, formatC(x, digits = 17, format = "g")))
  write.csv(p, file.path(out, paste0(name, ".expected.csv")), row.names = FALSE, na = "")
  cat(name, if (is.null(type)) "" else type, "\n", file = file.path(out, "cases.txt"), append = TRUE)
}

# stats: glm (binomial, Poisson, Gamma) and lm
infert2 <- infert
save_case("glm_binomial", glm(case ~ age + parity + education + spontaneous + induced,
                                family = binomial, data = infert2),
          infert2[c(1:40, 100:140), c("age", "parity", "education", "spontaneous", "induced")], "response")
save_case("glm_poisson", glm(breaks ~ wool + tension, family = poisson, data = warpbreaks),
          warpbreaks[, c("wool", "tension")], "response")
save_case("glm_gamma", glm(mpg ~ wt + hp, family = Gamma(link = "log"), data = mtcars),
          mtcars[, c("wt", "hp")], "response")
save_case("lm", lm(mpg ~ wt + factor(cyl) + log(hp), data = mtcars), mtcars[, c("wt", "cyl", "hp")])

# loess: outside the fitted range, predictions are NA
nd <- data.frame(speed = c(2, 4, 10.5, 17, 25, 30))
save_case("loess", loess(dist ~ speed, cars), nd)

# rpart: classification (type prob, one column per class) and regression
save_case("rpart_class", rpart(Species ~ ., iris), iris[seq(1, 150, by = 3), 1:4], "prob")
save_case("rpart_reg", rpart(mpg ~ ., mtcars), mtcars[, -1])

# MASS polr, type probs
save_case("polr", polr(Sat ~ Infl + Type + Cont, weights = Freq, data = housing, Hess = TRUE),
          housing[, c("Infl", "Type", "Cont")], "probs")

# randomForest (class and probabilities), ranger (probabilities), nnet multinom
rf <- randomForest(Species ~ ., iris, ntree = 50)
save_case("randomforest", rf, iris[seq(2, 150, by = 3), 1:4])
save_case("randomforest_prob", rf, iris[seq(2, 150, by = 3), 1:4], "prob")
save_case("ranger", ranger(Species ~ ., iris, num.trees = 50, probability = TRUE, seed = 1),
          iris[seq(3, 150, by = 3), 1:4])
save_case("multinom", multinom(Species ~ ., iris, trace = FALSE), iris[seq(1, 150, by = 5), 1:4], "probs")

# a Date and a logical predictor, and NA in the new data
d <- data.frame(t = as.Date("2024-01-01") + 0:59, flag = rep(c(TRUE, FALSE), 30))
d$y <- 3 + 0.1 * as.numeric(d$t - min(d$t)) + 2 * d$flag + sin(1:60)
nd <- d[c(1:10, 50:60), c("t", "flag")]
nd$flag[3] <- NA
save_case("lm_date_logical", lm(y ~ t + flag, d), nd)

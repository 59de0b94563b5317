# The model zoo: families and formulas R users save that tests/r/fit_models.R does
# not cover (issue 19). For each case it writes <case>.rds, the new data to score as
# an input file (<case>.csv: factors written as their labels, i.e. text; or
# <case>.parquet), and <case>.expected.csv: R's own predict() on the same rows held
# the way the model was trained (factors as factors, date-times as POSIXct), with
# the predict arguments the test publishes.
#
#   Rscript tests/r/fit_zoo.R OUTDIR
suppressMessages({
  library(MASS); library(splines); library(survival)
  library(gbm); library(e1071); library(ranger); library(randomForest); library(rpart)
})
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1]]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
set.seed(19)

expected <- function(name, p) {
  if (inherits(p, "ranger.prediction")) p <- p$predictions
  if (is.matrix(p) && ncol(p) == 1L && is.null(colnames(p))) p <- p[, 1]  # a vector, for scorer too
  if (is.list(p) && !is.data.frame(p)) {  # lda/qda: class, posterior, x
    parts <- list()
    for (nm in names(p)) {
      if (is.matrix(p[[nm]])) for (j in colnames(p[[nm]])) parts[[paste0(nm, "_", j)]] <- p[[nm]][, j]
      else parts[[nm]] <- p[[nm]]
    }
    p <- as.data.frame(parts, optional = TRUE)
    names(p) <- paste0("prediction_", names(p))
  } else if (!is.null(attr(p, "probabilities"))) {  # svm with probability = TRUE
    pr <- attr(p, "probabilities")
    d <- data.frame(prediction_class = as.character(p))
    for (j in colnames(pr)) d[[paste0("prediction_probabilities_", j)]] <- pr[, j]
    p <- d
  } else if (is.matrix(p)) {
    p <- as.data.frame(p, optional = TRUE)
    names(p) <- paste0("prediction_", names(p))
  } else {
    p <- data.frame(prediction = if (is.factor(p)) as.character(p) else as.vector(p))
  }
  num <- vapply(p, is.numeric, TRUE)
  p[num] <- lapply(p[num], function(x) ifelse(is.na(x), NA, formatC(x, digits = 17, format = "g")))
  write.csv(p, file.path(out, paste0(name, ".expected.csv")), row.names = FALSE, na = "")
}

save_case <- function(name, model, newdata, p) {
  saveRDS(model, file.path(out, paste0(name, ".rds")))
  text <- newdata
  for (v in names(text)) if (is.factor(text[[v]])) text[[v]] <- as.character(text[[v]])
  write.csv(text, file.path(out, paste0(name, ".csv")), row.names = FALSE, na = "")
  expected(name, p)
}

# A factor whose levels are not in alphabetical order: text coded alphabetically
# (what R does to a character column) scores wrong.
n <- 400
d <- data.frame(x = rnorm(n), size = factor(sample(c("small", "medium", "large"), n, TRUE),
                                            levels = c("small", "medium", "large")))
d$y <- 2 * d$x + c(small = 0, medium = 5, large = 10)[as.character(d$size)] + rnorm(n, sd = 0.2)
d$cls <- factor(ifelse(d$y + rnorm(n) > 5, "hi", "lo"), levels = c("lo", "hi"))
d$z <- rnorm(n)
nd <- d[c(1:20, 201:220), c("x", "size")]

g <- gbm(y ~ x + size, data = d, distribution = "gaussian", n.trees = 80, interaction.depth = 2, verbose = FALSE)
save_case("gbm_factor", g, nd, predict(g, nd, n.trees = 60))

r1 <- ranger(y ~ x + size, d, num.trees = 50, seed = 1, respect.unordered.factors = "order")
save_case("ranger_order", r1, nd, predict(r1, nd))
r2 <- ranger(y ~ x + size, d, num.trees = 50, seed = 1)  # keeps no levels: --levels size=small,medium,large
save_case("ranger_ignore", r2, nd, predict(r2, nd))

s1 <- svm(y ~ x + size, d)
save_case("svm_reg", s1, nd, predict(s1, nd))
s2 <- svm(cls ~ x + size, d, probability = TRUE)
save_case("svm_prob", s2, nd, predict(s2, nd, probability = TRUE))

rf <- randomForest(y ~ x + size, d, ntree = 50)
save_case("rf_formula_factor", rf, nd, predict(rf, nd))

rfx <- randomForest(x = d[, c("x", "size")], y = d$y, ntree = 50)  # x/y interface: forest$xlevels
save_case("rf_xy_factor", rfx, nd, predict(rfx, nd))

nn <- nnet::nnet(cls ~ x + size, d, size = 3, trace = FALSE)
save_case("nnet_factor", nn, nd, predict(nn, nd))

ct <- caret::train(y ~ x + size, d, method = "lm", trControl = caret::trainControl(method = "none"))
save_case("caret_factor", ct, nd, predict(ct, nd))

rp <- rpart(y ~ x + size, d)
save_case("rpart_factor", rp, nd, predict(rp, nd))

ld <- lda(cls ~ x + size, d)
save_case("lda", ld, nd, predict(ld, nd))
qd <- qda(cls ~ x + z, d)  # within a class a level of size is constant: qda needs numbers
ndz <- d[c(1:20, 201:220), c("x", "z")]
save_case("qda", qd, ndz, predict(qd, ndz))

# splines in the formula, the package attached the way users do it
w <- data.frame(x = seq(0, 10, length.out = 200))
w$y <- sin(w$x) + rnorm(200, sd = 0.1)
nw <- data.frame(x = c(0.5, 2.25, 5, 7.75, 9.9))
m_ns <- lm(y ~ ns(x, df = 4), w)
save_case("lm_ns", m_ns, nw, predict(m_ns, nw))
m_bs <- lm(y ~ bs(x, degree = 3, df = 5), w)
save_case("lm_bs", m_bs, nw, predict(m_bs, nw))

# an offset given as an argument, not in the formula
o <- data.frame(x = rnorm(200), exposure = runif(200, 1, 50))
o$count <- rpois(200, o$exposure * exp(0.3 * o$x))
m_off <- glm(count ~ x, offset = log(exposure), family = poisson, data = o)
no <- o[1:15, c("x", "exposure")]
save_case("glm_offset", m_off, no, predict(m_off, no, type = "response"))

# a POSIXct predictor (time of day matters): the CSV holds ISO 8601 text
tt <- data.frame(ts = as.POSIXct("2024-03-01 00:00:00", tz = "UTC") + sort(runif(300, 0, 30 * 86400)))
tt$y <- as.numeric(tt$ts) / 86400 - 19783 + 3 * sin(as.numeric(tt$ts) / 86400 * 2 * pi) + rnorm(300, sd = 0.1)
m_ts <- lm(y ~ ts, tt)
nts <- data.frame(ts = as.POSIXct(c("2024-03-02 06:00:00", "2024-03-10 18:30:00", "2024-03-20 12:00:00"), tz = "UTC"))
saveRDS(m_ts, file.path(out, "lm_posixct.rds"))
write.csv(data.frame(ts = format(nts$ts, "%Y-%m-%dT%H:%M:%SZ")), file.path(out, "lm_posixct.csv"), row.names = FALSE)
expected("lm_posixct", predict(m_ts, nts))

# a character predictor (not a factor): lm keeps its values in xlevels
ch <- data.frame(x = rnorm(120), shop = sample(c("north", "east", "west"), 120, TRUE), stringsAsFactors = FALSE)
ch$y <- ch$x + c(north = 1, east = 2, west = 3)[ch$shop] + rnorm(120, sd = 0.1)
m_ch <- lm(y ~ x + shop, ch)
nch <- data.frame(x = c(0.1, 0.2, 0.3), shop = c("west", "west", "west"), stringsAsFactors = FALSE)
save_case("lm_character_one_value", m_ch, nch, predict(m_ch, nch))

# a rank-deficient fit: predict() warns
rk <- data.frame(a = rnorm(30), b = rnorm(30))
rk$c <- rk$a + rk$b
rk$y <- rk$a - rk$b + rnorm(30)
m_rk <- lm(y ~ a + b + c, rk)
nrk <- rk[1:5, c("a", "b", "c")]
save_case("lm_rank_deficient", m_rk, nrk, suppressWarnings(predict(m_rk, nrk)))

# survival::coxph, whose predict method R finds only once survival is loaded
cx <- coxph(Surv(time, status) ~ age + sex, data = lung)
ncx <- lung[1:10, c("age", "sex")]
save_case("coxph", cx, ncx, predict(cx, ncx, type = "risk"))

# European Excel CSV: ';' between fields, ',' as the decimal mark
e <- mtcars[1:8, c("wt", "hp")]
m_eu <- lm(mpg ~ wt + hp, mtcars)
saveRDS(m_eu, file.path(out, "lm_european.rds"))
write.csv2(e, file.path(out, "lm_european.csv"), row.names = FALSE)
expected("lm_european", predict(m_eu, e))

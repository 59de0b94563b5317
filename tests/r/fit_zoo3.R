# The model zoo, round three (issue 27): mixed models and S4 classes, and the cases a new
# user's trial found scored wrong or refused unclearly. As tests/r/fit_zoo.R: for each
# case <case>.rds, the new data as an input file (<case>.csv, factors as their labels),
# and <case>.expected.csv, R's own predict() on the same rows held the way the model was
# trained, with the predict arguments the test publishes (tests/test_model_zoo3.py).
#
#   Rscript tests/r/fit_zoo3.R OUTDIR
suppressMessages({
  library(lme4); library(kernlab); library(partykit); library(pls); library(e1071); library(ranger)
  library(survival); library(nlme); library(caret)
})
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1]]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
set.seed(27)

# R's prediction as the columns scorer writes: a vector as prediction, the columns of a
# matrix or data frame as prediction_<name>. Numbers to 17 digits.
expected <- function(name, p) {
  if (is.matrix(p) || is.data.frame(p)) {
    p <- as.data.frame(p, optional = TRUE)
    names(p) <- paste0("prediction_", names(p))
  } else {
    p <- data.frame(prediction = if (is.factor(p)) as.character(p) else as.vector(p))
  }
  num <- vapply(p, is.numeric, TRUE)
  p[num] <- lapply(p[num], function(x) ifelse(is.na(x), NA, formatC(x, digits = 17, format = "g")))
  write.csv(p, file.path(out, paste0(name, ".expected.csv")), row.names = FALSE, na = "")
}

save_case <- function(name, model, newdata, p, text = newdata) {
  saveRDS(model, file.path(out, paste0(name, ".rds")))
  for (v in names(text)) if (is.factor(text[[v]])) text[[v]] <- as.character(text[[v]])
  write.csv(text, file.path(out, paste0(name, ".csv")), row.names = FALSE, na = "")
  expected(name, p)
}

# -- mixed models (lme4, nlme) ---------------------------------------------------------------
m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
nd <- sleepstudy[c(1:5, 100:105), c("Days", "Subject")]
save_case("lmer", m, nd, predict(m, nd))
nd_new <- rbind(nd, data.frame(Days = c(2, 7), Subject = factor(c("999", "998"))))
save_case("lmer_new_levels", m, nd_new, predict(m, nd_new, allow.new.levels = TRUE))
save_case("lmer_population", m, nd, predict(m, nd, re.form = NA))

g <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbpp, family = binomial)
ndg <- cbpp[c(1:6, 40:45), c("period", "herd")]
save_case("glmer", g, ndg, predict(g, ndg, type = "response"))

lm1 <- lme(distance ~ age, random = ~ 1 | Subject, data = Orthodont)
ndl <- as.data.frame(Orthodont)[c(1:4, 50:53), c("age", "Subject")]
save_case("lme_level1", lm1, ndl, predict(lm1, ndl, level = 1))

# -- S4 and other classes ------------------------------------------------------------------
k <- ksvm(Species ~ ., data = iris, prob.model = TRUE, kernel = "rbfdot", kpar = list(sigma = 0.5))
ndk <- iris[c(1:4, 60:63, 120:123), 1:4]
save_case("ksvm_prob", k, ndk, predict(k, ndk, type = "probabilities"))
save_case("ksvm_class", k, ndk, predict(k, ndk))

ct <- ctree(Species ~ ., data = iris)
save_case("ctree_prob", ct, ndk, predict(ct, ndk, type = "prob"))
save_case("ctree", ct, ndk, predict(ct, ndk))

# pls: predict() gives an array, rows x responses x components
dpl <- data.frame(matrix(rnorm(100 * 5), 100, dimnames = list(NULL, paste0("x", 1:5))))
dpl$y <- with(dpl, x1 + 2 * x2 - x3 + rnorm(100, sd = 0.1))
pl <- plsr(y ~ x1 + x2 + x3 + x4 + x5, ncomp = 3, data = dpl)
ndp <- dpl[1:12, paste0("x", 1:5)]
p3 <- predict(pl, ndp)
flat <- matrix(p3, nrow = nrow(ndp), dimnames = list(NULL, paste0("y_", sub(" ", "_", dimnames(p3)[[3]]))))
save_case("plsr", pl, ndp, flat)
save_case("plsr_ncomp", pl, ndp, predict(pl, ndp, ncomp = 2)[, 1, 1])
data(yarn)  # the predictors as one matrix column (I(NIR)): refused, with the way that works
saveRDS(plsr(density ~ NIR, ncomp = 3, data = yarn[1:21, ]), file.path(out, "plsr_matrix.rds"))

# -- e1071 naiveBayes with levels that look like numbers -------------------------------------
n <- 300
d <- data.frame(x = rnorm(n), grade = factor(sample(c("2", "10", "1"), n, TRUE), levels = c("2", "10", "1")))
d$cls <- factor(ifelse(d$x + as.integer(as.character(d$grade)) / 5 + rnorm(n) > 1, "yes", "no"))
nb <- naiveBayes(cls ~ x + grade, d)
ndn <- d[1:20, c("x", "grade")]
save_case("naivebayes_raw", nb, ndn, predict(nb, ndn, type = "raw"))
save_case("naivebayes_class", nb, ndn, predict(nb, ndn))

# -- svm decision values; ranger standard errors ---------------------------------------------
s <- svm(cls ~ x + grade, d)
ps <- predict(s, ndn, decision.values = TRUE)
dv <- attr(ps, "decision.values")
save_case("svm_decision", s, ndn, data.frame(class = as.character(ps), check.names = FALSE,
                                            setNames(as.data.frame(dv), paste0("decision.values_", colnames(dv)))))
r <- ranger(x ~ grade + cls, d, num.trees = 60, keep.inbag = TRUE, seed = 2)
pr <- predict(r, d[1:30, c("grade", "cls")], type = "se")
save_case("ranger_se", r, d[1:30, c("grade", "cls")], data.frame(fit = pr$predictions, se = pr$se))

# -- a date-time used through its local hour: the training data's time zone ----------------
ts <- as.POSIXct("2024-03-01 00:00", tz = "America/New_York") + 3600 * sample(0:(24 * 60), n, TRUE)
dt <- data.frame(ts = ts, y = rnorm(n))
dt$y <- dt$y + ifelse(as.integer(format(dt$ts, "%H")) >= 12, 3, 0)
gl <- glm(y ~ I(as.integer(format(ts, "%H")) >= 12), data = dt)  # glm keeps its data: ts's time zone
ndt <- dt[1:24, "ts", drop = FALSE]
text_t <- data.frame(ts = format(ndt$ts, "%Y-%m-%dT%H:%M:%SZ", tz = "UTC"))  # instants, written in UTC
save_case("posixct_local_hour", gl, ndt, predict(gl, ndt), text = text_t)
ll <- lm(y ~ I(as.integer(format(ts, "%H")) >= 12), data = dt)  # lm keeps only the hour: --tz says the zone
save_case("posixct_lm_hour", ll, ndt, predict(ll, ndt), text = text_t)

# -- a formula term computed over the rows predict() is given --------------------------------
dc <- data.frame(x = rnorm(n, 10), y = rnorm(n))
dc$y <- dc$y + 2 * (dc$x - mean(dc$x))
lc <- lm(y ~ I(x - mean(x)), dc)
ndc <- data.frame(x = rnorm(40, 12))
save_case("formula_over_rows", lc, ndc, predict(lc, ndc))

# -- a level spelled NA ----------------------------------------------------------------------
dn <- data.frame(region = factor(sample(c("NA", "EU", "APAC"), n, TRUE), levels = c("NA", "EU", "APAC")),
                 x = rnorm(n))
dn$y <- dn$x + c("NA" = 1, EU = 2, APAC = 3)[as.character(dn$region)]
lna <- lm(y ~ region + x, dn)
ndna <- dn[1:12, c("region", "x")]
save_case("level_na", lna, ndna, predict(lna, ndna))

# -- base R constants in a formula -----------------------------------------------------------
dp <- data.frame(t = runif(n))
dp$y <- sin(2 * pi * dp$t) + rnorm(n, sd = 0.1)
lp <- lm(y ~ sin(2 * pi * t) + cos(2 * pi * t), dp)
save_case("formula_pi", lp, dp[1:10, "t", drop = FALSE], predict(lp, dp[1:10, "t", drop = FALSE]))

# -- caret's x/y interface with a factor -----------------------------------------------------
dx <- data.frame(x = rnorm(n), size = factor(sample(c("small", "medium", "large"), n, TRUE),
                                             levels = c("small", "medium", "large")))
yx <- 2 * dx$x + c(small = 0, medium = 5, large = 10)[as.character(dx$size)] + rnorm(n, sd = 0.2)
cx <- train(x = dx, y = yx, method = "rpart", trControl = trainControl(method = "none"),
            tuneGrid = data.frame(cp = 0.01))
save_case("caret_xy_factor", cx, dx[1:15, ], predict(cx, dx[1:15, ]))

# -- survreg quantiles: a vector as a predict argument ---------------------------------------
sr <- survreg(Surv(time, status) ~ age + sex, data = lung)
ndsr <- lung[1:10, c("age", "sex")]
q <- predict(sr, ndsr, type = "quantile", p = c(0.1, 0.5, 0.9))
colnames(q) <- c("0.1", "0.5", "0.9")  # scorer names the columns by the vector argument
save_case("survreg_quantiles", sr, ndsr, q)

# -- coxph with type = "expected" (needs the outcome's time and status as inputs) -------------
cx2 <- coxph(Surv(time, status) ~ age + sex, data = lung, model = TRUE)
ndx2 <- lung[1:10, c("time", "status", "age", "sex")]
save_case("coxph_expected", cx2, ndx2, predict(cx2, ndx2, type = "expected"))

# -- models a saved-model user tries that are forecasts, not predict(newdata) ----------------
saveRDS(smooth.spline(dp$t, dp$y), file.path(out, "smooth_spline.rds"))
saveRDS(arima(lh, order = c(1, 0, 0)), file.path(out, "arima.rds"))

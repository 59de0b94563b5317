# glmnet models predict from a numeric matrix built the way the model was fitted, with
# a lambda: an R function does it. Publish the model file with the function:
#
#   scorer models publish examples/glmnet_score.R --name churn-net --with cv_fit.rds
#
# (cv_fit.rds: saveRDS(cv.glmnet(x, y), "cv_fit.rds"), with x's columns named.)
suppressMessages(library(glmnet))
fit <- readRDS("cv_fit.rds")  # published with --with, found in the function's directory

score <- function(data, s = "lambda.min") {
  vars <- rownames(fit$glmnet.fit$beta)
  missing <- setdiff(vars, names(data))
  if (length(missing)) stop("missing column(s): ", paste(missing, collapse = ", "))
  x <- as.matrix(data[, vars])
  cbind(data, prediction = as.vector(predict(fit, newx = x, s = s)))
}

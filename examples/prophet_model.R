# Fit and save a prophet model, to publish it like any other model (its predict()
# method scores a file of future dates; scorer finds the prophet package itself):
#
#   Rscript examples/prophet_model.R /tmp/prophet
#   scorer models publish /tmp/prophet/prophet.rds --name visits --output-columns yhat,yhat_lower,yhat_upper
#   scorer drop /tmp/prophet/future.csv --model visits    # a column ds of dates
#
# The output keeps the input's ds and adds prediction_yhat, prediction_yhat_lower and
# prediction_yhat_upper.
suppressMessages(library(prophet))
out <- commandArgs(trailingOnly = TRUE)[[1]]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
set.seed(16)
days <- seq(as.Date("2024-01-01"), by = "day", length.out = 180)
history <- data.frame(ds = days, y = 100 + 10 * sin(seq_along(days) * 2 * pi / 7) + cumsum(rnorm(180)))
m <- prophet(history, daily.seasonality = FALSE, yearly.seasonality = FALSE)
saveRDS(m, file.path(out, "prophet.rds"))
write.csv(data.frame(ds = max(days) + 1:28), file.path(out, "future.csv"), row.names = FALSE)

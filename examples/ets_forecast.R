# An exponential-smoothing forecast (forecast::ets) of each file's series, h steps ahead.
#
#   scorer models publish examples/ets_forecast.R --name ets --param h=12
#   scorer drop monthly.csv --model ets                  # a column y, oldest first
#
# A model that needs a horizon rather than new data: the published parameter h is the
# horizon, and the output has h rows (step, prediction, the 80% and 95% intervals).
suppressMessages(library(forecast))

score <- function(data, h = 12, frequency = 12) {
  series <- ts(data$y, frequency = frequency)
  fc <- forecast(ets(series), h = h)
  data.frame(step = seq_len(h), prediction = as.numeric(fc$mean),
             lower80 = as.numeric(fc$lower[, 1]), upper80 = as.numeric(fc$upper[, 1]),
             lower95 = as.numeric(fc$lower[, 2]), upper95 = as.numeric(fc$upper[, 2]))
}

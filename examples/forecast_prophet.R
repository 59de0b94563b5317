# Fit a forecasting model on each file that arrives, and write its forecast back.
#
#   scorer models publish examples/forecast_prophet.R --name daily-forecast --param horizon=28
#   scorer drop sales.csv --model daily-forecast        # columns: date (YYYY-MM-DD), y
#
# The output, output/daily-forecast/sales.csv, holds the next `horizon` days: date,
# prediction, and the 80% interval. One file, one fit: a series per file.
suppressMessages(library(prophet))

score <- function(data, horizon = 28) {
  if (!all(c("date", "y") %in% names(data))) stop("the file needs columns date and y")
  fit <- prophet(data.frame(ds = data$date, y = data$y), daily.seasonality = FALSE,
                 yearly.seasonality = FALSE, weekly.seasonality = TRUE)
  future <- make_future_dataframe(fit, periods = horizon, include_history = FALSE)
  fc <- predict(fit, future)
  data.frame(date = as.Date(fc$ds), prediction = fc$yhat,
             lower = fc$yhat_lower, upper = fc$yhat_upper)
}

# The demo's model and sample input, from data that ships with R (datasets::infert):
# a binomial glm of infertility case status, and a sample of new patients to score,
# one of whom has an education level the model never saw (so the demo shows a
# rejected row too).
#
#   Rscript scripts/demo-model.R OUTDIR
args <- commandArgs(trailingOnly = TRUE)
out <- args[[1]]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
fit <- glm(case ~ age + parity + education + spontaneous + induced, family = binomial, data = infert)
saveRDS(fit, file.path(out, "infert.rds"))
set.seed(1)
sample <- infert[sample(nrow(infert), 24), c("age", "parity", "education", "spontaneous", "induced")]
sample$education <- as.character(sample$education)
sample$education[7] <- "postgraduate"
write.csv(sample, file.path(out, "patients.csv"), row.names = FALSE)

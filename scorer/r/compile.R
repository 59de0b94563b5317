# Byte-compile scorer.R's functions once, ahead of every job, into an .rds that
# scorer.r.bridge reads instead of sourcing scorer.R. Without it R's JIT compiles each
# function at its first call in every process: 0.08 s of a 10-row run, on every
# container start. The file records the MD5 of the scorer.R it was made from and the
# R that made it; rbridge uses it only when both still match, else it sources scorer.R.
#
# Usage (scripts/setup and docker/Dockerfile run it):
#   Rscript scorer/r/compile.R scorer/r/scorer.R scorer/r/scorer-compiled.rds

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2L) stop("usage: Rscript compile.R <scorer.R> <out.rds>")
src <- args[[1L]]
out <- args[[2L]]
env <- new.env()
sys.source(src, envir = env, keep.source = FALSE)
functions <- lapply(mget(ls(env, all.names = TRUE), envir = env), function(f) {
  if (!is.function(f)) return(f)
  environment(f) <- globalenv()  # where sourcing scorer.R puts them
  compiler::cmpfun(f)
})
# written beside its final name, then renamed: a job never reads half a file
tmp <- paste0(out, ".tmp")
saveRDS(list(source_md5 = unname(tools::md5sum(src)), r_version = R.version.string, functions = functions), tmp)
if (!file.rename(tmp, out)) stop("could not write ", out)

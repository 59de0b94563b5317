#!/bin/sh
# Remove what the scoring job never reads from the image, one named step at a
# time, printing what each step saved so the numbers in docs/image.md can be
# re-measured from any build log ("slim: <step>: saved N MB").
#
#   slim.sh r            R's docs, help, tests, translations, C++ headers
#   slim.sh venv DIR     the virtualenv: build tools, pyarrow parts scorer does
#                        not import, tests, headers, symbol tables; then
#                        compiles it (which adds size, reported as negative)
#
# Runs in the same RUN as the install it trims: a file deleted in a later layer
# still costs its full size in the image.
set -eu

kb() { du -sk "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

# step NAME ROOT -- COMMAND...: run COMMAND and report how much ROOT shrank.
step() {
  step_name=$1 step_root=$2
  shift 3
  before=$(kb "$step_root")
  "$@"
  after=$(kb "$step_root")
  echo "slim: $step_name: saved $(awk -v b="$before" -v a="$after" 'BEGIN {printf "%.1f", (b - a) / 1024}') MB"
}

rm_found() {  # rm_found DIR FIND-ARGS...: delete what find matches
  find_dir=$1
  shift
  find "$find_dir" "$@" -prune -exec rm -rf {} +
}

r_docs() {
  for lib in /usr/lib/R/library /usr/lib/R/site-library; do
    [ -d "$lib" ] || continue
    # html/help: R's help system; doc: vignettes; demo; tests: package test suites.
    rm_found "$lib" -mindepth 2 -maxdepth 2 -type d \
      \( -name html -o -name help -o -name doc -o -name demo -o -name tests \)
  done
  rm -rf /usr/share/R/doc/*
}
r_translations() {
  # Messages in other languages; the image runs with LANG=C.UTF-8.
  rm -rf /usr/lib/R/library/translations
  rm_found /usr/lib/R -mindepth 3 -maxdepth 3 -type d -name po
}
r_headers() {
  # Rcpp/RcppEigen/BH ship C++ headers for compiling packages that link to them;
  # nothing is compiled in the image. R's own headers (/usr/share/R/include) stay:
  # the build stage compiles rpy2 against them.
  rm_found /usr/lib/R/site-library -mindepth 2 -maxdepth 2 -type d -name include
}

venv_build_tools() {
  # pip, setuptools and wheel built the venv; the job never installs anything.
  "$venv/bin/python" -m pip uninstall -q -y setuptools wheel
  "$venv/bin/python" -m pip uninstall -q -y pip
}
venv_pyarrow_unused() {
  pa="$site/pyarrow"
  # scorer imports pyarrow, pyarrow.csv, pyarrow.parquet and pyarrow.compute.
  # Flight and the S3/GCS/HDFS/Azure filesystems and ORC are separate extension
  # modules that pyarrow imports lazily or inside try/except ImportError;
  # substrait, acero and dataset stay because libarrow_python links them.
  rm -f "$pa"/_flight.* "$pa"/libarrow_flight.so* "$pa"/libarrow_python_flight.so* \
    "$pa"/flight.py "$pa"/_s3fs.* "$pa"/libarrow_s3.so* "$pa"/_gcsfs.* \
    "$pa"/_hdfs.* "$pa"/_azurefs.* "$pa"/_orc.* "$pa"/orc.py
  # A wheel cannot hold symlinks, so each library is there up to three times
  # (libX.so, libX.so.MAJOR, libX.so.MAJOR.MINOR.PATCH); the loader only
  # opens the soname, libX.so.MAJOR.
  for f in "$pa"/lib*.so.*.*; do
    [ -e "$f" ] || continue
    soname=$(printf '%s' "$f" | sed -E 's/(\.so\.[0-9]+)\..*/\1/')
    if [ -e "$soname" ]; then rm -f "$f" "${soname%.so.*}.so"; fi
  done
}
venv_dev_files() {
  # Headers, Cython sources and static libraries are for building against these
  # packages, not for running them.
  rm -rf "$site"/pyarrow/include "$site"/pyarrow/src "$site"/numpy/_core/include \
    "$site"/numpy/_core/lib "$site"/numpy/f2py/src
  # Only in pyarrow and numpy: rpy2 and cffi keep their headers, which are small
  # and which their build code reads.
  find "$site/pyarrow" "$site/numpy" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
    -o -name '*.h' -o -name '*.hpp' -o -name '*.cc' -o -name '*.a' -o -name '*.pyi' \) \
    -type f -delete
  find "$site" -depth -type d -empty -delete
}
venv_tests() {
  rm_found "$site" -type d -name tests
}
venv_strip() {
  # Symbol tables only help debuggers; wheels (pyarrow's above all) ship them.
  # Not the libraries auditwheel vendored into <package>.libs/: it rewrote their
  # headers with patchelf, and strip then leaves them unloadable ("ELF load
  # command address/offset not page-aligned", seen with numpy's OpenBLAS).
  find "$site" -type d -name '*.libs' -prune -o -type f -name '*.so*' \
    -exec strip --strip-unneeded {} +
}
venv_compile() {
  # Byte-code for every module, written once here: the image's user cannot write
  # __pycache__, so without it every container start would compile each module
  # it imports again. unchecked-hash: the files never change after the build, so
  # Python need not stat the sources at import either. Reported as a negative
  # saving: this step adds size to save start-up time.
  "$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$venv"
}

case "${1:-}" in
  r)
    step r-docs /usr -- r_docs
    step r-translations /usr -- r_translations
    step r-cpp-headers /usr -- r_headers
    ;;
  venv)
    venv=${2:?usage: slim.sh venv DIR}
    site=$(echo "$venv"/lib/python3*/site-packages)
    step venv-build-tools "$venv" -- venv_build_tools
    step venv-pyarrow-unused "$venv" -- venv_pyarrow_unused
    step venv-dev-files "$venv" -- venv_dev_files
    step venv-tests "$venv" -- venv_tests
    step venv-strip "$venv" -- venv_strip
    step venv-compile "$venv" -- venv_compile
    ;;
  *) echo "usage: slim.sh r | venv DIR" >&2; exit 2 ;;
esac

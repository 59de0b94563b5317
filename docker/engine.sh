# shellcheck shell=bash
# Which container engine to use, shared by scripts/build-image, scripts/run-image,
# bench/image.py and tests/test_image.py so they cannot disagree.
#
# Sourced: sets the array ENGINE (the command line to prefix every call with) and,
# for podman, exports CONTAINERS_CONF. Executed: prints ENGINE one word a line
# (what the Python callers read) and the CONTAINERS_CONF line as
# "CONTAINERS_CONF=<path>".
#
# docker counts only when its engine answers (`docker info`): the docker CLI is
# installed on machines that have no daemon. Set SCORER_ENGINE=docker|podman to choose.

_scorer_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCORER_LOCAL="$_scorer_root/.scorer-local"

scorer_engine_name() {
  if [ -n "${SCORER_ENGINE:-}" ]; then echo "$SCORER_ENGINE"; return; fi
  if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
    echo docker
  else
    echo podman
  fi
}

case "$(scorer_engine_name)" in
  docker) ENGINE=(docker) ;;
  podman)
    # crun and podman's default ulimits both fail on these machines (hybrid
    # cgroups, no RLIMIT_NOFILE raise): runc + cgroupfs + an empty ulimit list;
    # see /work/shared/reference/containers.md.
    ENGINE=(podman --runtime runc --cgroup-manager=cgroupfs)
    export CONTAINERS_CONF="$SCORER_LOCAL/containers.conf"
    ;;
  *)
    echo "SCORER_ENGINE must be docker or podman, not '$SCORER_ENGINE'" >&2
    [ "${BASH_SOURCE[0]}" != "$0" ] || exit 1
    return 1
    ;;
esac

# The base image this machine can build from. BASE_IMAGE in the environment wins;
# then the public image when a registry answers; otherwise the image
# scripts/setup-containers makes with debootstrap (no registry is reachable on
# the development machines).
SCORER_LOCAL_BASE=localhost/debian:bookworm
scorer_registry_reachable() {
  # The registry answers 401 to an anonymous /v2/; any HTTP status means reachable.
  local code
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null) || true
  [ -n "$code" ] && [ "$code" != 000 ]
}
scorer_base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then echo "$BASE_IMAGE"
  elif "${ENGINE[@]}" image inspect docker.io/library/debian:bookworm-slim >/dev/null 2>&1 \
       || scorer_registry_reachable; then
    # Fully qualified: podman does not resolve short names without a search registry.
    echo docker.io/library/debian:bookworm-slim
  else
    echo "$SCORER_LOCAL_BASE"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  printf '%s\n' "${ENGINE[@]}"
  [ -z "${CONTAINERS_CONF:-}" ] || echo "CONTAINERS_CONF=$CONTAINERS_CONF"
fi

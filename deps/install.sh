#!/usr/bin/env bash
# Installs the Debian 12 packages herald needs, as root.
#   bash deps/install.sh --run   only what building and running herald needs (compiler, CMake,
#                                the libraries' -dev packages, llhttp's C sources)
#   bash deps/install.sh         everything: also what the tests, the fuzzing, the package checks
#                                and the benchmark need (the README's test command, .ci/run)
# Idempotent: packages already present are left alone, and apt is not touched when nothing is missing.
set -euo pipefail

mode=test
case "${1:-}" in
  --run) mode=run ;;
  '') ;;
  *) echo "usage: deps/install.sh [--run]" >&2; exit 2 ;;
esac

# Building and running: the compiler and CMake, and the libraries herald links
# (libsystemd: sd_notify, for Type=notify units and the watchdog).
packages=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev libcjson-dev libhiredis-dev zlib1g-dev libsystemd-dev
)
if [ "$mode" = test ]; then
  # openssl (the CLI) makes the self-signed certificate of the TLS tests.
  # redis-server, redis-sentinel and redis-tools (redis-cli): the Redis engine's tests start their own.
  # chromium: the browser tests; clang, libclang-rt-14-dev: the fuzz targets; clang-format: style.
  # nginx, libnginx-mod-nchan: the benchmark's comparison (bench/).
  # python3: the sd_notify test's datagram socket; systemd (systemd-analyze): the unit's check;
  # dpkg-dev, file, fakeroot, lintian: building the .deb with CPack and checking it (test/package/).
  # prometheus (and its promtool): the metrics test scrapes herald with a real Prometheus.
  packages+=(
    git curl ca-certificates openssl
    redis-server redis-sentinel redis-tools chromium clang clang-format libclang-rt-14-dev
    nginx libnginx-mod-nchan
    python3 systemd dpkg-dev file fakeroot lintian
    prometheus
  )
  # Node.js may already come from another source (nodesource); only fall back to Debian's when absent.
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

# llhttp's C sources come from Debian's node-llhttp; CMake looks for them here.
llhttp_sources=/usr/share/llhttp/llhttp.c
llhttp_extracted=/usr/local/share/herald/node-llhttp

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for p in "${packages[@]}"; do
  is_installed "$p" || missing+=("$p")
done
need_llhttp=0
[ -f "$llhttp_sources" ] || [ -f "$llhttp_extracted$llhttp_sources" ] || need_llhttp=1
((${#missing[@]})) || ((need_llhttp)) || exit 0

if [ "$(id -u)" != 0 ]; then
  echo "deps/install.sh: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Packages such as redis-server and nginx start their service on install; herald's tests
# and benchmarks start what they need themselves, so keep services down while installing.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
if ((${#missing[@]})); then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ((need_llhttp)); then
  # node-llhttp depends on nodejs:any, which a Node.js not packaged by Debian may not provide,
  # and which running herald does not need. Only its C sources are needed: for --run, and when
  # apt cannot install it, unpack the package instead.
  if [ "$mode" = run ] || ! apt-get install -y -qq --no-install-recommends node-llhttp >/dev/null 2>&1; then
    workdir=$(mktemp -d)
    (cd "$workdir" && apt-get download -qq node-llhttp)
    mkdir -p "$llhttp_extracted"
    dpkg-deb -x "$workdir"/node-llhttp_*.deb "$llhttp_extracted"
    rm -rf "$workdir"
  fi
fi

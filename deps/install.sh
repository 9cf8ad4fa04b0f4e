#!/usr/bin/env bash
# Installs every system package herald needs to build, test and benchmark, on Debian 12 as root.
# Idempotent: packages already present are left alone, and apt is not touched when nothing is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git curl ca-certificates
  libuv1-dev node-llhttp libssl-dev libcjson-dev libhiredis-dev zlib1g-dev
  redis-server chromium clang clang-format libclang-rt-14-dev
)
# Node.js may already come from another source (nodesource); only fall back to Debian's when absent.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "deps/install.sh: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

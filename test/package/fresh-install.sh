#!/usr/bin/env bash
# On a fresh Debian 12 root, as root, from the repository (by hand, about 5 min):
#   ../shared/tools/fresh-machine . -- bash test/package/fresh-install.sh
# The README's run command installs only what building and running herald needs;
# the .deb built from that installs with apt-get, and the installed herald, run
# as an unprivileged user with the installed config, serves /healthz; an edited
# config survives reinstalling the package (a conffile).
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "FAIL: $*" >&2; exit 1; }

bash deps/install.sh --run
for p in chromium nginx clang redis-server lintian nodejs; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
    case "$p" in nodejs) command -v node >/dev/null && continue ;; esac # the base image may bring node
    fail "deps/install.sh --run installed $p, which only the tests need"
  fi
done
cmake -S . -B build -DHERALD_SANITIZE=OFF
cmake --build build -j2 --target package
dpkg-deb --field build/herald_*.deb Depends
apt-get install -y -qq ./build/herald_*.deb

command -v herald | grep -qx /usr/bin/herald || fail "herald is not /usr/bin/herald"
herald --version
[ -f /usr/share/man/man1/herald.1.gz ] || fail "no man page"
[ -f /lib/systemd/system/herald.service ] || fail "no unit"

run_installed() {
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
    herald --config /etc/herald/herald.json 2>/tmp/herald.log &
  pid=$!
  for _ in $(seq 100); do
    grep -q 'listening on' /tmp/herald.log && break
    sleep 0.1
  done
  cat /tmp/herald.log
  curl -fsS "http://$1/healthz" | grep -qx ok || fail "/healthz on $1"
  kill -TERM "$pid"
  wait "$pid" || fail "herald exited $? after SIGTERM"
}
run_installed 127.0.0.1:8080

# A local edit of the config stays when the package is installed again.
sed -i 's/"127.0.0.1:8080"/"127.0.0.1:8081"/' /etc/herald/herald.json
apt-get install -y -qq --reinstall ./build/herald_*.deb
grep -q '"127.0.0.1:8081"' /etc/herald/herald.json || fail "reinstalling replaced the edited config"
run_installed 127.0.0.1:8081
echo "PASS: fresh install"

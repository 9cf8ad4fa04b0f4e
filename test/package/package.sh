#!/usr/bin/env bash
# The .deb (docs/api.md, "Running as a service"): CPack builds it from BUILD_DIR;
# its control data names only Debian runtime libraries, it holds what an
# operator needs where Debian puts it, lintian finds no error and no warning
# but the accepted ones, the unit passes systemd-analyze verify, and the
# packaged binary, unpacked, serves /healthz with the packaged config.
# (apt-get install of the package on a fresh Debian 12 root: test/package/fresh-install.sh.)
# Usage: package.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
work=$(mktemp -d)
herald_pid=
cleanup() {
  [ -z "$herald_pid" ] || kill -9 "$herald_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== cpack"
cpack --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(echo "$work"/out/herald_*_amd64.deb)
[ -f "$deb" ] || fail "no herald_*_amd64.deb in $work/out"

echo "== control"
dpkg-deb --info "$deb"
[ "$(dpkg-deb --field "$deb" Package)" = herald ] || fail "Package"
[ "$(dpkg-deb --field "$deb" Section)" = net ] || fail "Section"
dpkg-deb --field "$deb" Maintainer | grep -q '@' || fail "Maintainer"
# Depends: Debian's runtime libraries only (no -dev package, nothing the tests use).
depends=$(dpkg-deb --field "$deb" Depends)
for lib in libuv1 libssl3 libcjson1 libhiredis0.14 zlib1g libsystemd0; do
  grep -Eq "(^|, )$lib( |,|$)" <<<"$depends" || fail "Depends lacks $lib: $depends"
done
tr ',' '\n' <<<"$depends" | sed -E 's/^ *//; s/ .*//' | while read -r name; do
  case "$name" in
  libc6 | libuv1 | libssl3 | libcjson1 | libhiredis0.14 | zlib1g | libsystemd0) ;;
  *) fail "Depends names $name, not a runtime library herald links: $depends" ;;
  esac
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | grep -qx /etc/herald/herald.json ||
  fail "/etc/herald/herald.json is not a conffile"

echo "== contents"
dpkg-deb --contents "$deb" | awk '{print $6}' >"$work/contents"
for path in ./usr/bin/herald ./usr/share/man/man1/herald.1.gz ./etc/herald/herald.json \
  ./lib/systemd/system/herald.service ./usr/share/doc/herald/copyright \
  ./usr/share/doc/herald/changelog.Debian.gz; do
  grep -qx "$path" "$work/contents" || fail "$path is not in the package"
done

echo "== lintian"
# Accepted (docs/api.md, "Running as a service"): herald is not in Debian, so
# its first changelog entry closes no ITP bug.
accepted='initial-upload-closes-no-bugs'
lintian --allow-root --fail-on none "$deb" >"$work/lintian" 2>&1 || { cat "$work/lintian"; fail "lintian did not run"; }
cat "$work/lintian"
if grep -E '^[EW]: ' "$work/lintian" | grep -Ev ": ($accepted)( |$)"; then
  fail "lintian: errors or warnings (above) beyond the accepted ones"
fi

echo "== unpacked: the unit and the binary"
root="$work/root"
dpkg-deb -x "$deb" "$root"
# systemd-analyze verify checks that ExecStart's binary exists: point it at the unpacked one.
mkdir "$work/unit"
sed "s|^ExecStart=/usr/bin/herald |ExecStart=$root/usr/bin/herald |" \
  "$root/lib/systemd/system/herald.service" >"$work/unit/herald.service"
grep -q "^ExecStart=$root/usr/bin/herald --config /etc/herald/herald.json$" "$work/unit/herald.service" ||
  fail "ExecStart is not /usr/bin/herald --config /etc/herald/herald.json"
systemd-analyze verify --man=no "$work/unit/herald.service" 2>&1 | tee "$work/verify"
if grep -v -e 'Failed to connect to bus' "$work/verify" | grep -q .; then
  fail "systemd-analyze verify found problems"
fi

"$root/usr/bin/herald" --version | grep -q '^herald ' || fail "herald --version"
# The packaged config as installed, on a free port (8080 may be taken on a test machine).
"$root/usr/bin/herald" --config "$root/etc/herald/herald.json" --listen 127.0.0.1:0 2>"$work/herald.log" &
herald_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$work/herald.log" && break
  kill -0 "$herald_pid" 2>/dev/null || { cat "$work/herald.log"; fail "herald exited"; }
  sleep 0.1
done
port=$(sed -nE 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/p' "$work/herald.log" | head -1)
[ -n "$port" ] || { cat "$work/herald.log"; fail "herald did not log its port"; }
[ "$(curl -sS "http://127.0.0.1:$port/healthz")" = ok ] || fail "/healthz did not answer ok"
kill -TERM "$herald_pid"
status=0
wait "$herald_pid" || status=$?
herald_pid=
[ "$status" = 0 ] || { cat "$work/herald.log"; fail "herald exited $status after SIGTERM"; }
echo "== cmake --install: the unit names the prefix's binary; an edited config stays"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
grep -qx "ExecStart=$work/prefix/bin/herald --config $work/prefix/etc/herald/herald.json" \
  "$work/prefix/lib/systemd/system/herald.service" || fail "cmake --install: ExecStart"
echo '{"listen": ["127.0.0.1:0"]}' >"$work/prefix/etc/herald/herald.json"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
[ "$(cat "$work/prefix/etc/herald/herald.json")" = '{"listen": ["127.0.0.1:0"]}' ] ||
  fail "cmake --install replaced an existing config"
echo "PASS"

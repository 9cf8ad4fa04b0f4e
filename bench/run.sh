#!/usr/bin/env bash
# Fan-out benchmark: herald vs nchan (nginx + libnginx-mod-nchan), same machine,
# same client (bench/fanout.c), same workloads. See bench/README.md.
#
#   bash bench/run.sh            5 repetitions (about 9 minutes on 2 cores)
#   bash bench/run.sh --quick    1 repetition (smoke run, about 2 minutes)
#   bash bench/run.sh --reps N   N repetitions
#   bash bench/run.sh --summary DIR   reprint the summary of an earlier run
#   --rev REV       benchmark herald at commit REV (default HEAD)
#   --worktree      benchmark the working tree as it is (uncommitted edits too)
#
# Installs nothing: `bash deps/install.sh` (as root) brings nginx and
# libnginx-mod-nchan. By default herald is built (Release, no sanitizers) from
# a clean `git archive` of the commit, so edits in progress in the working tree
# do not leak into the numbers; the client (bench/fanout.c) is built next to it.
# Every server is started and stopped here, on a fresh port, for every single
# run; readiness is polled. Results: machine.txt, one JSON per run, server
# logs, runs.tsv and summary.md in $OUT_DIR (default
# /tmp/herald-bench-<date>); the summary is also printed.
set -euo pipefail

ARGS="$*"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
reps=5
summary_only=""
rev=HEAD
worktree=""
while (($#)); do
  case "$1" in
    --quick) reps=1 ;;
    --reps) reps=$2; shift ;;
    --summary) summary_only=$2; shift ;;
    --rev) rev=$2; shift ;;
    --worktree) worktree=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

OUT_DIR=${OUT_DIR:-/tmp/herald-bench-$(date +%Y%m%d-%H%M%S)}
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

# Scenarios: name mode subscribers client_procs messages size rate(0 = closed loop)
scenarios=(
  "a-sse-10k-20mps sse 10000 4 200 256 20"
  "b-sse-1k-maxrate sse 1000 4 2000 256 0"
  "c-ws-10k-20mps ws 10000 4 200 256 20"
  "d-sse-10k-5mps sse 10000 4 30 256 5"
)
SRC_ADDRS=16      # subscribers spread over 127.0.0.2 .. 127.0.0.17
RUN_TIMEOUT=150   # hard limit for one client run, seconds

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- summary: medians per scenario and server, and herald/nchan ratios ------------
summarize() {
local dir=$1 reps=$2
awk -F'\t' -v reps="$reps" '
function median(key,   n, i, j, t, a) {
  n = cnt[key]; if (n == 0) return "-"
  for (i = 1; i <= n; i++) a[i] = val[key, i]
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ratio(x, y) { return (x == "-" || y == "-" || y + 0 == 0) ? "-" : sprintf("%.3g", x / y) }
NR == 1 { next }
{
  sc = $2; sv = $3
  if (!(sc in seen)) { seen[sc] = 1; order[++nsc] = sc }
  for (i = 4; i <= NF; i++) { k = sc SUBSEP sv SUBSEP i; val[k, ++cnt[k]] = $i }
  runs[sc SUBSEP sv]++
}
END {
  printf "Medians over %s repetition(s) (lost/disc: sum over runs).\n\n", reps
  printf "| scenario | server | runs | deliveries/s | p50 ms | p99 ms | max ms | server CPU s | CPU us/delivery | peak RSS MB | lost | disc |\n"
  printf "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
  for (s = 1; s <= nsc; s++) {
    sc = order[s]
    for (v = 1; v <= 2; v++) {
      sv = v == 1 ? "herald" : "nchan"
      for (i = 4; i <= 10; i++) m[sv, i] = median(sc SUBSEP sv SUBSEP i)
      lost = 0; disc = 0
      k = sc SUBSEP sv SUBSEP 11; for (j = 1; j <= cnt[k]; j++) lost += val[k, j]
      k = sc SUBSEP sv SUBSEP 12; for (j = 1; j <= cnt[k]; j++) disc += val[k, j]
      printf "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", sc, sv, runs[sc SUBSEP sv] + 0,
        m[sv, 4], m[sv, 5], m[sv, 6], m[sv, 7], m[sv, 8], m[sv, 9], m[sv, 10], lost, disc
    }
    printf "| %s | **herald/nchan** | | **%s** | **%s** | **%s** | %s | **%s** | %s | **%s** | | |\n", sc,
      ratio(m["herald", 4], m["nchan", 4]), ratio(m["herald", 5], m["nchan", 5]),
      ratio(m["herald", 6], m["nchan", 6]), ratio(m["herald", 7], m["nchan", 7]),
      ratio(m["herald", 8], m["nchan", 8]), ratio(m["herald", 9], m["nchan", 9]),
      ratio(m["herald", 10], m["nchan", 10])
  }
  printf "\nRatios: deliveries/s above 1 favours herald; latency, CPU and RSS below 1 favour herald.\n"
}' "$dir/runs.tsv" >"$dir/summary.md.tmp"
{ [ -f "$dir/machine.txt" ] && sed 's/^/    /' "$dir/machine.txt" && echo; cat "$dir/summary.md.tmp"; } >"$dir/summary.md"
rm -f "$dir/summary.md.tmp"
cat "$dir/summary.md"
}


if [ -n "$summary_only" ]; then
  summarize "$summary_only" "$(awk -F'\t' 'NR > 1 {print $1}' "$summary_only/runs.tsv" | sort -un | wc -l)"
  exit 0
fi

mkdir -p "$OUT_DIR"

# ---- build ---------------------------------------------------------------
command -v nginx >/dev/null && [ -f "$NCHAN_MODULE" ] ||
  { echo "run.sh: nginx or $NCHAN_MODULE missing; run: sudo bash deps/install.sh" >&2; exit 1; }
BUILD_DIR=$OUT_DIR/build
if [ -n "$worktree" ]; then
  src=$root
  dirty=$(git --no-optional-locks -C "$root" status --porcelain --untracked-files=no -- . ':!bench' | wc -l)
  herald_rev="$(git -C "$root" rev-parse --short HEAD) + working tree ($dirty modified files)"
else
  src=$OUT_DIR/herald-src
  mkdir -p "$src"
  git -C "$root" archive "$rev" | tar -x -C "$src"
  herald_rev=$(git -C "$root" rev-parse --short "$rev")
fi
log "building herald $herald_rev (Release, no sanitizers) in $BUILD_DIR"
cmake -S "$src" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DHERALD_SANITIZE=OFF >/dev/null
cmake --build "$BUILD_DIR" --target herald -j2 >/dev/null
cc -O2 -Wall -Wextra -o "$BUILD_DIR/fanout" "$here/fanout.c" -luv
HERALD=$BUILD_DIR/herald
FANOUT=$BUILD_DIR/fanout

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: bench/run.sh $ARGS"
  echo "cpus: $(nproc) x $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel: $(uname -r)"
  echo "herald: $herald_rev"
  echo "nginx: $(dpkg-query -W -f='${Version}' nginx), libnginx-mod-nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan), libuv: $(dpkg-query -W -f='${Version}' libuv1)"
} >"$OUT_DIR/machine.txt"
cat "$OUT_DIR/machine.txt" >&2

# ---- servers ---------------------------------------------------------------
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
pick_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 10000))
    port_free "$p" && { echo "$p"; return; }
  done
  echo "run.sh: no free port" >&2; exit 1
}

# Polls GET /healthz until it answers 200 (at most 10 s) while the process lives.
wait_ready() {
  local port=$1 pid=$2
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ] && return 0
    sleep 0.05
  done
  return 1
}

# Sends SIGTERM and waits (bounded) for the process to end; SIGKILL after 10 s.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "process $pid ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

SERVER_PID=""     # the process to stop
MEASURED_PID=""   # the process whose CPU and memory are measured
SERVER_LOG=""
cleanup() { [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"; SERVER_PID=""; }
trap cleanup EXIT INT TERM

start_herald() {
  local port=$1 tag=$2
  SERVER_LOG=$OUT_DIR/$tag.herald.log
  "$HERALD" --config "$here/herald.json" --listen "127.0.0.1:$port" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  MEASURED_PID=$SERVER_PID
  wait_ready "$port" "$SERVER_PID" || { log "herald did not become ready"; cat "$SERVER_LOG" >&2; return 1; }
}

start_nchan() {
  local port=$1 tag=$2 dir
  dir=$(mktemp -d "$OUT_DIR/$tag.nchan.XXXX")
  sed -e "s#@PORT@#$port#g" -e "s#@DIR@#$dir#g" "$here/nchan.conf" >"$dir/nchan.conf"
  SERVER_LOG=$dir/error.log
  nginx -p "$dir" -c "$dir/nchan.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$port" "$SERVER_PID" || { log "nginx did not become ready"; cat "$dir"/*.log >&2; return 1; }
  # worker_processes 1: the master's only child is the worker that serves.
  MEASURED_PID=$(cat "/proc/$SERVER_PID/task/$SERVER_PID/children" | awk '{print $1}')
  [ -n "$MEASURED_PID" ] || { log "no nginx worker"; return 1; }
}

# ---- one run -----------------------------------------------------------------
TSV=$OUT_DIR/runs.tsv
printf 'rep\tscenario\tserver\tdeliveries_per_s\tp50_ms\tp99_ms\tmax_ms\tcpu_s\tcpu_us_per_delivery\tvmhwm_mb\tlost\tdisconnects\tsubscribed\tsubscribe_failed\tpublish_errors\n' >"$TSV"

# Reads a numeric field "key":value from a fanout JSON report.
field() { grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2; }

run_one() {
  local rep=$1 server=$2 name=$3 mode=$4 subs=$5 procs=$6 msgs=$7 size=$8 rate=$9
  local port tag json sub_path pub_path
  port=$(pick_port)
  tag=r$rep-$name-$server
  json=$OUT_DIR/$tag.json
  if [ "$server" = herald ]; then
    start_herald "$port" "$tag" || return 1
    pub_path='/topics/{topic}'
    [ "$mode" = sse ] && sub_path='/events?topic={topic}' || sub_path='/ws?topic={topic}'
  else
    start_nchan "$port" "$tag" || return 1
    pub_path='/pub?id={topic}'
    sub_path='/sub?id={topic}'
  fi
  log "rep $rep  $name  $server (port $port, pid $MEASURED_PID)"
  local rc=0
  timeout -k 5 $((RUN_TIMEOUT + 20)) "$FANOUT" --mode "$mode" --port "$port" \
    --topic "bench-$rep-$name" --sub-path "$sub_path" --pub-path "$pub_path" \
    --subs "$subs" --procs "$procs" --src-addrs "$SRC_ADDRS" --messages "$msgs" --size "$size" \
    --rate "$rate" --server-pid "$MEASURED_PID" --label "$tag" --timeout "$RUN_TIMEOUT" \
    >"$json" 2>"$OUT_DIR/$tag.client.log" || rc=$?
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "!! $server DIED during $name (rep $rep); its log: $SERVER_LOG"
    tail -20 "$SERVER_LOG" >&2 || true
  fi
  stop_pid "$SERVER_PID"; SERVER_PID=""
  [ "$rc" = 0 ] || log "!! client exit $rc for $tag: $(tr '\n' ' ' <"$OUT_DIR/$tag.client.log" | cut -c1-400)"
  if [ ! -s "$json" ]; then
    log "!! no report for $tag"
    return 0
  fi
  local dps p50 p99 max cpu recv exp lost disc subd subf perr hwm
  dps=$(field deliveries_per_s "$json"); p50=$(field p50 "$json"); p99=$(field p99 "$json")
  max=$(field max "$json"); cpu=$(field publish "$json"); recv=$(field deliveries_received "$json")
  lost=$(field deliveries_lost "$json"); disc=$(field disconnects "$json")
  subd=$(field subscribed "$json"); subf=$(field subscribe_failed "$json")
  perr=$(field publish_errors "$json"); hwm=$(field server_vmhwm_kb "$json")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$name" "$server" \
    "$dps" "$p50" "$p99" "$max" "$cpu" \
    "$(awk -v c="$cpu" -v n="$recv" 'BEGIN{printf "%.2f", (n > 0) ? c * 1e6 / n : 0}')" \
    "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k/1024}')" "$lost" "$disc" "$subd" "$subf" "$perr" >>"$TSV"
  if [ "$lost" != 0 ] || [ "$disc" != 0 ] || [ "$subf" != 0 ] || [ "$perr" != 0 ]; then
    log "!! $tag: lost=$lost disconnects=$disc subscribe_failed=$subf publish_errors=$perr (see $json)"
  fi
  grep -E '\[(warn|error|crit|alert|emerg)\]| (warn|error) ' "$SERVER_LOG" 2>/dev/null | head -5 >&2 || true
}

# ---- main ----------------------------------------------------------------------
t_start=$(date +%s)
log "results in $OUT_DIR; $reps repetition(s)"
for rep in $(seq "$reps"); do
  # alternate which server goes first, so slow drifts in machine noise hit both
  if ((rep % 2)); then order=(herald nchan); else order=(nchan herald); fi
  for sc in "${scenarios[@]}"; do
    read -r name mode subs procs msgs size rate <<<"$sc"
    for server in "${order[@]}"; do
      run_one "$rep" "$server" "$name" "$mode" "$subs" "$procs" "$msgs" "$size" "$rate" ||
        log "!! run failed: rep $rep $name $server"
    done
  done
done

summarize "$OUT_DIR" "$reps"
log "done in $(($(date +%s) - t_start)) s; per-run data: $TSV"

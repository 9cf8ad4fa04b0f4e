#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time (CI: 10 s each), after
# building them with clang in a build directory of their own. Each starts
# from a copy of its seed corpus, so the repository's corpus stays as
# committed. A crash, leak, timeout or sanitizer report fails the run and
# leaves the reproducer in the work directory, named in the output.
#
#   FUZZ_SECONDS=600 bash test/fuzz/run-bounded.sh     # longer, by hand
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$src/build-fuzz}
seconds=${FUZZ_SECONDS:-10}
names=()
for source in "$src"/test/fuzz/fuzz_*.c; do
  name=$(basename "$source" .c)
  names+=("${name#fuzz_}")
done

cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER=clang -DHERALD_FUZZ=ON >/dev/null
cmake --build "$build" -j2 --target "${names[@]/#/fuzz_}" >/dev/null

work=$(mktemp -d /tmp/herald-fuzz.XXXXXX)
for name in "${names[@]}"; do
  mkdir -p "$work/$name"
  cp "$src/test/fuzz/corpus/$name/"* "$work/$name/"
  log="$work/$name.log"
  if ! (cd "$work" && "$build/test/fuzz/fuzz_$name" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "$work/$name" >"$log" 2>&1); then
    echo "fuzz_$name FAILED; log and reproducer in $work:"
    tail -n 60 "$log"
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "fuzz_$name: $runs runs in ${seconds} s, clean"
done
rm -rf "$work"

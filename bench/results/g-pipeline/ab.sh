#!/bin/bash
# bench g, publish cases (publish: 2 nodes + Redis; publish-single: one node, memory engine), herald and
# nchan in every invocation: before = b1080a6 (main), after = 416f2fe (pipelined publishes reach the
# engine before the previous answer). Both built from a clean git archive (Release, no sanitizers) into
# /tmp/pipe/REV/build; the order alternates every repetition.
cd "$(dirname "$0")/../../.."
for i in 1 2 3; do
  if ((i % 2)); then order="before after"; else order="after before"; fi
  for r in $order; do
    case $r in before) rev=b1080a6;; after) rev=416f2fe;; esac
    echo "$(date -u +%FT%TZ) $r-$i $(uptime)" >> /tmp/pipe/ab/uptime.log
    OUT_DIR=/tmp/pipe/ab/$r-$i bench/run --only g --cases '^publish' --reps 1 --herald /tmp/pipe/$rev/build/herald > /tmp/pipe/ab/$r-$i.log 2>&1
  done
done
echo "$(date -u +%FT%TZ) done $(uptime)" >> /tmp/pipe/ab/uptime.log

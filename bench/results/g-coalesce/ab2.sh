#!/bin/bash
# bench g, publish cases (publish: 2 nodes + Redis; publish-single: one node, memory engine), herald and nchan,
# a91d724 (main, "base") against 3215f28 (this branch, "final"), alternating which goes first
cd /work/wt/coalesce
for i in 1 2 3; do
  if ((i % 2)); then order="base final"; else order="final base"; fi
  for r in $order; do
    echo "$(date -u +%FT%TZ) $r-$i $(uptime)" >> /tmp/coal/ab2/uptime.log
    OUT_DIR=/tmp/coal/ab2/$r-$i bench/run --only g --cases '^publish' --reps 1 --herald /tmp/coal/$r/build/herald > /tmp/coal/ab2/$r-$i.log 2>&1
  done
done
echo "$(date -u +%FT%TZ) done" >> /tmp/coal/ab2/uptime.log

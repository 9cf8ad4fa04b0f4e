#!/bin/bash
# bench g, publish cases (publish: 2 nodes + Redis; publish-single: one node, memory engine), herald and nchan:
# base = a91d724 (main), final = 3215f28 (group commit), final2 = b00a157 (+ script trims with fewer commands);
# the order rotates every repetition so that slow changes in the machine's load hit all three
cd /work/wt/coalesce
for i in 1 2 3 4; do
  case $((i % 3)) in 1) order="base final final2";; 2) order="final2 base final";; 0) order="final final2 base";; esac
  for r in $order; do
    echo "$(date -u +%FT%TZ) $r-$i $(uptime)" >> /tmp/coal/ab3/uptime.log
    OUT_DIR=/tmp/coal/ab3/$r-$i bench/run --only g --cases '^publish' --reps 1 --herald /tmp/coal/$r/build/herald > /tmp/coal/ab3/$r-$i.log 2>&1
  done
done
echo "$(date -u +%FT%TZ) done" >> /tmp/coal/ab3/uptime.log

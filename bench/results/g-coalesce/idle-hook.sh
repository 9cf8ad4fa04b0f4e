#!/bin/bash
# alternating runs of bench g's publish cases: base (a91d724), c1 (301e2b3), c2 (3066007)
cd /work/wt/coalesce
for i in 1 2 3; do
  case $i in 1) order="base c1 c2";; 2) order="c2 c1 base";; 3) order="c1 base c2";; esac
  for r in $order; do
    echo "$(date -u +%FT%TZ) $r-$i $(uptime)" >> /tmp/coal/runs/uptime.log
    OUT_DIR=/tmp/coal/runs/$r-$i bench/run --only g --cases '^publish' --reps 1 --no-nchan --herald /tmp/coal/$r/build/herald > /tmp/coal/runs/$r-$i.log 2>&1
  done
done
echo done >> /tmp/coal/runs/uptime.log

#!/bin/bash
# Part B: bench/run --only a,b,c, herald only, before (7451956) and after (c6fa470 = main), alternating
cd /work/wt/bench
for i in 1 2 3; do
  if ((i % 2)); then order="7451956 c6fa470"; else order="c6fa470 7451956"; fi
  for r in $order; do
    echo "== $(date -u +%T) run $i $r; uptime: $(uptime)"
    OUT_DIR=/tmp/bench-seam/$r-$i bench/run --only a,b,c --reps 1 --no-nchan --herald /tmp/seam/$r/build/herald > /tmp/bench-seam/$r-$i.log 2>&1
    echo "   exit $?"
  done
done
echo "== done $(date -u +%T)"

# runs 4 and 5 (after the g latency cases), same loop with i in 4 5:
for i in 4 5; do
  if ((i % 2)); then order="7451956 c6fa470"; else order="c6fa470 7451956"; fi
  for r in $order; do
    echo "== $(date -u +%T) run $i $r; uptime: $(uptime)"
    OUT_DIR=/tmp/bench-seam/$r-$i bench/run --only a,b,c --reps 1 --no-nchan --herald /tmp/seam/$r/build/herald > /tmp/bench-seam/$r-$i.log 2>&1
    echo "   exit $?"
  done
done

# idle memory of the seam itself, RelWithDebInfo builds of bench/callgrind:
for r in 745195600cde272317d206c8a14bb31a6c90c0f9 616f01838aadca6bd703ff63e715ebac70d36763; do
  echo "== $(date -u +%T) a ${r:0:7}; uptime: $(uptime)"
  OUT_DIR=/tmp/bench-seam/mem-${r:0:7} bench/run --only a --reps 1 --no-nchan --herald /tmp/herald-callgrind-builds/$r/build/herald > /tmp/bench-seam/mem-${r:0:7}.log 2>&1
  echo "   exit $?"
done

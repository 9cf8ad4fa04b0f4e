#!/bin/bash
# usage: ctx.sh LOG OUT — waits for node 1's pid in a bench/run log, then samples the context
# switches of all its threads (and of node 2, the herald pid) until they exit; writes the last sample
log=$1; out=$2; exec 2>$out.err; set -x
while ! grep -q "node 1 port .* pid" "$log" 2>/dev/null; do sleep 0.05; done
line=$(grep -m1 "node 1 port .* pid" "$log")
n1=$(sed -E 's/.*node 1 port [0-9]+ pid ([0-9]+).*/\1/' <<<"$line")
n2=$(sed -E 's/.*herald .port [0-9]+, pid ([0-9]+),.*/\1/' <<<"$line")
last=""
while [ -d /proc/$n1 ]; do
  s1=$(cat /proc/$n1/task/*/status 2>/dev/null | awk '/voluntary_ctxt_switches/{if ($1 ~ /^nonvol/) n+=$2; else v+=$2} END {print v, n}')
  s2=$(cat /proc/$n2/task/*/status 2>/dev/null | awk '/voluntary_ctxt_switches/{if ($1 ~ /^nonvol/) n+=$2; else v+=$2} END {print v, n}')
  [ -n "$s1" ] && last="node1 vol/invol $s1 node2 vol/invol $s2"
  sleep 0.2
done
echo "$last" > "$out"

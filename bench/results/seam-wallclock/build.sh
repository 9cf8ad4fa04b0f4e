#!/bin/bash
# build herald at each given revision from a clean git archive (Release, no sanitizers)
set -e
for r in "$@"; do
  d=/tmp/seam/$r; mkdir -p $d/src
  git -C /work/wt/bench archive $r | tar -x -C $d/src
  cmake -S $d/src -B $d/build -DCMAKE_BUILD_TYPE=Release -DHERALD_SANITIZE=OFF > $d/cmake.log 2>&1
  cmake --build $d/build --target herald -j2 > $d/build.log 2>&1
  echo built $r
done

#!/usr/bin/env bash
# Kept for old references: the benchmark driver is now bench/run (same options,
# plus --smoke, --only, --herald, --no-nchan). See bench/README.md.
exec "$(dirname "${BASH_SOURCE[0]}")/run" "$@"

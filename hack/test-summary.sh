#!/usr/bin/env bash
# Sums cargo's per-binary "test result:" lines into one closing line, so a reader (or CI) sees
# the whole suite's count last: "summary: N passed, N failed".
set -euo pipefail
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$1"

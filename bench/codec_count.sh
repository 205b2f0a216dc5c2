#!/bin/sh
# Instruction counts (callgrind) of the codec: lf_encode and lf_decode,
# inclusive, for each case of bench/codec_count.lua (the small call: per
# call, the mean of 1 000). Instruction counts do not depend on the load
# of the machine, so they compare two builds where timings cannot.
# usage: sh bench/codec_count.sh [CASE...]   (default: table string small)
set -e
exe=${EXE:-bin/lua-futures}
out=${TMPDIR:-/tmp}/lf-codec-count.$$
cases=${*:-table string small}
for c in $cases; do
  valgrind --tool=callgrind --callgrind-out-file="$out" "$exe" \
    bench/codec_count.lua "$c" >/dev/null 2>&1
  div=1
  [ "$c" = small ] && div=1000
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$out" 2>/dev/null |
    awk -v c="$c" -v div="$div" '
      $1 ~ /^[0-9,]+$/ && $0 ~ /:lf_(en|de)code \[/ {
        v = $1; gsub(",", "", v)
        name = $0; sub(/ \[.*/, "", name); sub(/.*:/, "", name)
        if (!(name in ir)) ir[name] = v
      }
      $1 ~ /^[0-9,]+$/ && $0 ~ /PROGRAM TOTALS/ { tot = $1; gsub(",", "", tot) }
      END {
        printf "%-7s encode %12.0f Ir   decode %12.0f Ir   (whole run %s Ir)\n",
          c, ir["lf_encode"] / div, ir["lf_decode"] / div, tot
      }'
  rm -f "$out"
done

#!/usr/bin/env bash
# Issue 20's performance targets on a noisy shared machine, two ways:
# 1. instructions per decision (valgrind cachegrind; deterministic, unlike time here):
#    `TG_BENCH_COUNT=<case>:<n>` runs n decisions of one case; the difference between
#    two values of n removes the set-up. Cases: cached_no_rules, cached_three_rules,
#    uncached_off, uncached_on (telemetry at sample_ratio 0.01, spans included).
# 2. time, the rules interleaved in one process (`TG_BENCH_INTERLEAVED`: blocks of 2,000
#    decisions without and with the rules in turn, the median of per-round
#    differences), three times;
# 3. time, A B A B (criterion, pinned to core 1 with `taskset`):
#    rules: `rules/cached_no_rules` vs `rules/cached_three_rules` (one process: the
#           difference of one run's medians), repeated ROUNDS times;
#    tracing: `tracing_ab/uncached` with telemetry off vs on at 0.01, as separate
#           processes in turns.
# Usage: bench/policy_ab.sh [ROUNDS]   (default 4; 0 skips the timings)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
bin=$(cargo bench --bench policy --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="policy" and m.get("executable"): print(m["executable"])' | tail -n 1)
ir() { # instructions of `TG_BENCH_COUNT=$1:$2`
  TG_BENCH_COUNT="$1:$2" valgrind --tool=cachegrind --cache-sim=no \
    --cachegrind-out-file=/dev/null "$bin" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
per() { # instructions per decision of case $1 over $2 more decisions
  local a b; a=$(ir "$1" 200); b=$(ir "$1" $((200 + $2))); echo $(((b - a) / $2))
}
nr=$(per cached_no_rules 2000); tr=$(per cached_three_rules 2000)
off=$(per uncached_off 5000); on=$(per uncached_on 5000)
echo "instructions per decision: cached, no rules $nr; three rules $tr (+$((tr - nr)), \
$(python3 -c "print(f'{($tr-$nr)/$nr*100:+.1f}')") %)"
echo "instructions per decision: uncached, telemetry off $off; on at 0.01 $on \
($(python3 -c "print(f'{($on-$off)/$off*100:+.2f}')") %)"
for i in 1 2 3; do TG_BENCH_INTERLEAVED=300 taskset -c 1 "$bin"; done
[ "$rounds" -gt 0 ] || exit 0
opts=(--bench --measurement-time 3 --warm-up-time 1)
rules=() off=() on=()
for i in $(seq "$rounds"); do
  r=$(taskset -c 1 "$bin" "${opts[@]}" '^rules/cached' | sed -n 's/.*rules, cached: three rules add \([0-9.]*\) µs (\([0-9]*\) ns without.*/\1 \2/p')
  a=$(TG_BENCH_TELEMETRY=off taskset -c 1 "$bin" "${opts[@]}" tracing_ab | sed -n 's/.*median \([0-9]*\) ns/\1/p')
  b=$(TG_BENCH_TELEMETRY=on taskset -c 1 "$bin" "${opts[@]}" tracing_ab | sed -n 's/.*median \([0-9]*\) ns/\1/p')
  echo "round $i: three rules add ${r% *} µs (no rules: ${r#* } ns); tracing off ${a} ns, on 0.01 ${b} ns"
  rules+=("${r% *}") off+=("$a") on+=("$b")
done
python3 - "${rules[*]}" "${off[*]}" "${on[*]}" <<'PY'
import statistics, sys
rules, off, on = ([float(x) for x in a.split()] for a in sys.argv[1:4])
print(f"median: three rules add {statistics.median(rules):.2f} µs per cached decision")
ratios = [b / a for a, b in zip(off, on)]
print(f"median: tracing on at 0.01 / off = {statistics.median(ratios):.3f} "
      f"(off {statistics.median(off):.0f} ns, on {statistics.median(on):.0f} ns; per round {', '.join(f'{r:.3f}' for r in ratios)})")
PY

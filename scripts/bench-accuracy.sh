#!/usr/bin/env bash
# Timestamp accuracy against the simulator's ground truth, over loads and token rates (issue 8).
#
#   scripts/bench-accuracy.sh [STREAMS=1000] [TOKENS=100] [ITLS_MS="10 20 50"] [LOADS="burst open"]
#
# Runs the accuracy example (tests/examples/accuracy.rs) once per (load, inter-token gap) with the
# simulator in its own process (`tokengun sim --record-truth`), both scheduled freely over the
# machine's cores. With PIN=1 (and 2 or more cores) the simulator is pinned to CPU 0 and the agent's
# process to the others (`taskset`); on a 2-core machine that leaves the agent one core for its
# load and gRPC runtimes, which measured worse than free scheduling. Prints a
# Markdown table: TTFT error (first-token stamping lag) p99, every-token stamping lag p50/p99/max,
# inter-token gap error p99, and the agent process's CPU share and event-loop delay p99 (its own
# self-check). Linux only (taskset, /proc). Builds the release example and binary if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-1000}
tokens=${2:-100}
itls=${3:-"10 20 50"}
loads=${4:-"burst open"}
example=target/release/examples/accuracy
if [[ ! -x $example || ! -x target/release/tokengun ]]; then
  cargo build --release -p tokengun -p tokengun-tests --example accuracy
fi
# One socket per stream on each side, plus the simulator's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < 2 * streams + 256 )); then
  echo "error: the open-file limit ($(ulimit -n)) is too low for $streams streams; raise it with ulimit -n" >&2
  exit 1
fi
cores=$(nproc)
pin_agent=()
if [[ ${PIN:-0} == 1 ]] && (( cores >= 2 )) && command -v taskset >/dev/null; then
  export ACCURACY_SIM_CPUS=0
  pin_agent=(taskset -c "1-$((cores - 1))")
  placement="simulator pinned to CPU 0, agent to CPUs 1-$((cores - 1))"
else
  unset ACCURACY_SIM_CPUS
  placement="simulator and agent in separate processes, scheduled freely"
fi
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $placement; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| load | gap (ms) | chunks/s | TTFT error p99 | token lag p50 / p99 / max | gap error p99 | agent CPU | loop delay p99 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for load in $loads; do
  for itl in $itls; do
    out=$("${pin_agent[@]}" "$example" "$streams" "$tokens" "$load" "$itl" external 2>&1) || {
      echo "error: the accuracy example failed for $load $itl ms:" >&2
      echo "$out" >&2
      exit 1
    }
    line=$(grep '^summary:' <<<"$out")
    val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    echo "| $load | $itl | $(val chunks_per_s) | $(val ttft_err_p99_ms) ms | $(val token_lag_p50_ms) / $(val token_lag_p99_ms) / $(val token_lag_max_ms) ms | $(val gap_err_p99_ms) ms | $(val process_cpu_pct)% | $(val loop_delay_p99_ms) ms |"
  done
done
echo
echo "streams: $streams x $tokens tokens; load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# End-to-end overhead of one tokengun agent against the simulator's `firehose` profile (issue 8).
#
#   scripts/bench-overhead.sh [DURATION_S=10] [CONCURRENCY=8]
#
# Starts `tokengun sim --profile firehose` and a separate `tokengun-agent serve`, then runs a
# closed-loop `tokengun run --agent` for each framing (Ollama NDJSON via ollama-generate, OpenAI
# SSE via openai-chat). The agent's CPU time (utime + stime from /proc/<pid>/stat) is read before
# and after each run; the figure is tokens recorded (cycles.csv output_tokens, every one
# timestamped in its request's timeline) per agent CPU second, i.e. tokens/s per core used.
# Simulator, controller and agent share the machine's cores: wall-clock rates are not the figure.
# Linux only (/proc). Builds the release binaries if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s=${1:-10}
concurrency=${2:-8}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
need_release_bins
work=$(mktemp -d)
cleanup() {
  kill_started
  rm -rf "$work"
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

sim_port=$(free_port)
agent_port=$(free_port)
$bin/tokengun sim --profile firehose --listen "127.0.0.1:$sim_port" >"$work/sim.log" 2>&1 &
pids+=($!)
$bin/tokengun-agent serve --listen "127.0.0.1:$agent_port" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
wait_port "$sim_port" "$work"
wait_port "$agent_port" "$work"
hz=$(getconf CLK_TCK)
nproc_=$(nproc)

printf '%-16s %12s %10s %12s %16s %14s\n' api tokens wall_s agent_cpu_s tokens/cpu_s wall_tokens/s
for api in ollama-generate openai-chat; do
  before=$(cpu_ticks "$agent_pid")
  t0=$(date +%s.%N)
  $bin/tokengun run --agent "127.0.0.1:$agent_port" --target "http://127.0.0.1:$sim_port" \
    --api "$api" --shape closed --levels "$concurrency" --duration "${duration_s}s" \
    --no-monitor --no-report -q --out "$work/results" --run-id "$api" >"$work/$api.log" 2>&1 \
    || { echo "error: tokengun run failed for $api:" >&2; cat "$work/$api.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  after=$(cpu_ticks "$agent_pid")
  cycles=$work/results/$api/cycles.csv
  tokens=$(python3 - "$cycles" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(sum(int(r["output_tokens"] or 0) for r in rows))
failed = sum(int(r["failed"] or 0) for r in rows)
if failed:
    print(f"warning: {failed} failed requests", file=sys.stderr)
for r in rows:
    # The run's own self-check (agent CPU share of its cores, event-loop delay, verdict).
    print(f"  self-check: {r.get('self_check', '-')} (agent CPU {r.get('agent_cpu_pct', '-')}% of its cores, "
          f"loop delay p99 {r.get('loop_delay_p99_ms', '-')} ms)", file=sys.stderr)
PY
)
  awk -v api="$api" -v tok="$tokens" -v t0="$t0" -v t1="$t1" -v b="$before" -v a="$after" -v hz="$hz" \
    'BEGIN { cpu=(a-b)/hz; wall=t1-t0; printf "%-16s %12d %10.1f %12.2f %16.0f %14.0f\n", api, tok, wall, cpu, (cpu>0?tok/cpu:0), tok/wall }'
done
echo "machine: $nproc_ cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

#!/usr/bin/env bash
# Scale of one tokengun agent: STREAMS concurrent streams in one burst (issue 8).
#
#   scripts/bench-scale.sh [STREAMS=10000] [TOKENS=500]
#
# Starts `tokengun sim` (fast profile: 150 ms to the first token, a token every 10 ms, one slot
# per stream) and a separate `tokengun-agent serve`, runs one burst level of STREAMS, samples the
# agent's VmRSS from /proc every 100 ms, and prints the peak above the idle agent's RSS divided by
# the streams, the failures by kind, and the agent's open-file limits. Linux only.
set -euo pipefail
cd "$(dirname "$0")/.."
streams=${1:-10000}
tokens=${2:-500}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
need_release_bins
work=$(mktemp -d)
cleanup() {
  kill_started
  if [[ -n ${KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

sim_port=$(free_port)
agent_port=$(free_port)
$bin/tokengun sim --profile fast --slots "$streams" --tokens "$tokens" --model scale:1b \
  --listen "127.0.0.1:$sim_port" >"$work/sim.log" 2>&1 &
pids+=($!)
$bin/tokengun-agent serve --listen "127.0.0.1:$agent_port" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
wait_port "$sim_port" "$work"
wait_port "$agent_port" "$work"
idle_kib=$(rss_kib "$agent_pid")
echo "agent open-file limit (soft hard): $(awk '/Max open files/ {print $4, $5}' "/proc/$agent_pid/limits"); shell ulimit -n: $(ulimit -n)"

$bin/tokengun run --agent "127.0.0.1:$agent_port" --target "http://127.0.0.1:$sim_port" \
  --api ollama-generate --model scale:1b --levels "$streams" --timeout 300s \
  --no-monitor --no-report --out "$work/results" --run-id scale >"$work/run.log" 2>&1 &
run_pid=$!
peak_kib=$idle_kib
peak_fds=0
while kill -0 "$run_pid" 2>/dev/null; do
  k=$(rss_kib "$agent_pid"); ((k > peak_kib)) && peak_kib=$k
  n=$(ls "/proc/$agent_pid/fd" | wc -l); ((n > peak_fds)) && peak_fds=$n
  sleep 0.1
done
rc=0
wait "$run_pid" || rc=$?
echo "tokengun run exit status $rc; its output:"
tail -8 "$work/run.log"
python3 - "$work/results/scale/cycles.csv" <<PY
import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    print(f"level {r['level']}: completed {r['completed']}, failed {r['failed']} ({r['errors_by_kind'] or 'none'}), peak concurrency {r['peak_concurrency']}")
PY
awk -v i="$idle_kib" -v p="$peak_kib" -v s="$streams" -v f="$peak_fds" 'BEGIN {
  printf "agent RSS idle %.1f MiB, peak %.1f MiB: %.1f KiB per stream; peak open fds %d\n", i/1024, p/1024, (p-i)/s, f }'
# What was written: the timelines in records.pb (length-delimited protobuf, every chunk with its
# instant and token count) and the study's per-request CSVs; and whether writing held the load up
# (the run's own self-check: agent CPU, event-loop delay, start lag).
python3 - "$work/results/scale" <<'PY'
import csv, os, sys
d = sys.argv[1]
pb = os.path.join(d, "records.pb")
size = lambda p: os.path.getsize(p) if os.path.exists(p) else 0
sub = [os.path.join(dp, f) for dp, _, fs in os.walk(d) for f in fs if f.endswith("_throughput.csv")]
r = next(csv.DictReader(open(os.path.join(d, "cycles.csv"))))
tokens = int(r["output_tokens"] or 0)
print(f"written: records.pb {size(pb)/2**20:.1f} MiB for {tokens} tokens ({size(pb)/max(tokens,1):.1f} bytes a token); "
      f"{len(sub)} per-request throughput CSVs, {sum(size(p) for p in sub)/2**20:.1f} MiB")
import datetime, json
j = json.load(open(os.path.join(d, "run.json")))
t = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
print(f"cycle {float(r['duration_s']):.1f} s; whole run (connect, cycle, every record and file written) "
      f"{(t(j['ended_at']) - t(j['started_at'])).total_seconds():.1f} s")
print(f"self-check: {r.get('self_check', '-')}; agent CPU {r.get('agent_cpu_pct', '-')}% of its cores, "
      f"loop delay p99 {r.get('loop_delay_p99_ms', '-')} ms, max {r.get('loop_delay_max_ms', '-')} ms; "
      f"start lag p99 {float(r['send_lag_p99_s'] or 0)*1e3:.1f} ms")
PY

#!/usr/bin/env bash
# Long-run memory soak (issue 8): does tokengun's memory grow with run length?
#
#   scripts/soak.sh [DURATION_S=3600] [CONCURRENCY=4] [SAMPLE_S=30] [OUT_DIR=target/soak]
#
# Starts `tokengun sim` (profile `fast`: 150 ms to the first token, 10 ms a token, 100 tokens,
# 4 slots; other simulator flags in $SIM_ARGS, e.g. SIM_ARGS="--time-scale 0.02" for fifty times
# the request rate, which shows a per-request leak sooner; `tokengun run` flags in $RUN_ARGS, e.g.
# RUN_ARGS="--no-monitor" or "--monitor-interval 100ms" to tell the parts apart), a separate `tokengun-agent serve`, and one closed-loop level of DURATION_S through
# that agent with monitoring on (the agent samples the simulator's process and the machine).
# Every SAMPLE_S seconds it writes the resident memory (VmRSS) and open files of the agent, the
# controller and the simulator, and the bytes written so far (run folder, records.pb, agent
# spool), to OUT_DIR/soak.csv. At the end it prints, per process, RSS at the first sample after
# warm-up, at the end, the peak, and the least-squares growth in KiB per hour, beside the growth
# of what was written to disk. Linux only (/proc). Builds the release binaries if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
duration_s=${1:-3600}
concurrency=${2:-4}
sample_s=${3:-30}
out=${4:-target/soak}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
need_release_bins
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cleanup() {
  kill_started
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo ""; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
bytes() { du -sb "$1" 2>/dev/null | cut -f1 || echo 0; }

sim_port=$(free_port)
agent_port=$(free_port)
# shellcheck disable=SC2086 # SIM_ARGS is a list of flags
$bin/tokengun sim --profile fast ${SIM_ARGS:-} --listen "127.0.0.1:$sim_port" >"$out/sim.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
$bin/tokengun-agent serve --listen "127.0.0.1:$agent_port" --spool-dir "$out/spool" \
  >"$out/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
wait_port "$sim_port" "$out"
wait_port "$agent_port" "$out"

# shellcheck disable=SC2086 # RUN_ARGS is a list of flags
$bin/tokengun run --agent "127.0.0.1:$agent_port" --target "http://127.0.0.1:$sim_port" \
  --api ollama-generate --shape closed --levels "$concurrency" --duration "${duration_s}s" \
  --no-tui --out "$out/results" --run-id soak ${RUN_ARGS:-} >"$out/controller.log" 2>&1 &
ctl_pid=$!
pids+=("$ctl_pid")

echo "elapsed_s,agent_rss_kib,controller_rss_kib,sim_rss_kib,agent_fds,controller_fds,run_dir_bytes,records_pb_bytes,spool_bytes" >"$out/soak.csv"
start=$(date +%s)
echo "soak: ${duration_s}s closed loop at $concurrency; samples every ${sample_s}s in $out/soak.csv" >&2
while kill -0 "$ctl_pid" 2>/dev/null; do
  now=$(date +%s)
  echo "$((now - start)),$(rss_kib "$agent_pid"),$(rss_kib "$ctl_pid"),$(rss_kib "$sim_pid"),$(fds "$agent_pid"),$(fds "$ctl_pid"),$(bytes "$out/results/soak"),$(bytes "$out/results/soak/records.pb"),$(bytes "$out/spool")" >>"$out/soak.csv"
  # Sleep in small steps so the end of the run is noticed promptly.
  for _ in $(seq "$sample_s"); do
    kill -0 "$ctl_pid" 2>/dev/null || break
    sleep 1
  done
done
rc=0
wait "$ctl_pid" || rc=$?
echo "controller exited with $rc (log: $out/controller.log)" >&2
tail -n 5 "$out/controller.log" >&2 || true

python3 - "$out/soak.csv" "$out/results/soak/cycles.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["controller_rss_kib"]]
if len(rows) < 4:
    sys.exit("too few samples to fit a trend")
# Skip the first tenth (warm-up: allocator pools, connection pool, first cycle set-up).
rows = rows[len(rows) // 10:]
def fit(col):
    xs = [float(r["elapsed_s"]) for r in rows]
    ys = [float(r[col]) for r in rows if r[col]]
    xs = xs[: len(ys)]
    n = len(ys)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return ys[0], ys[-1], max(ys), slope * 3600.0
print(f"{'figure':<22}{'first':>12}{'last':>12}{'peak':>12}{'trend/hour':>14}")
for col, unit in [("agent_rss_kib", "KiB"), ("controller_rss_kib", "KiB"), ("sim_rss_kib", "KiB"),
                  ("agent_fds", ""), ("controller_fds", ""),
                  ("records_pb_bytes", "B"), ("run_dir_bytes", "B"), ("spool_bytes", "B")]:
    a, b, p, s = fit(col)
    print(f"{col:<22}{a:>12.0f}{b:>12.0f}{p:>12.0f}{s:>14.0f}")
try:
    c = next(csv.DictReader(open(sys.argv[2])))
    print(f"requests {c['requests']}, completed {c['completed']}, failed {c['failed']}, "
          f"output tokens {c['output_tokens']}, self-check {c.get('self_check', '-')}")
except (OSError, StopIteration) as e:
    print(f"no cycles.csv yet: {e}")
PY
exit "$rc"

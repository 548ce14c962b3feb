#!/usr/bin/env bash
# tokengun against the real llama.cpp llama-server (issue 15): client figures beside the server's
# own timings, token-count agreement, and tokengun's own CPU while the server has the cores.
#
#   scripts/bench-real-server.sh [REPS=3] [LEVELS=1,2,4,8,16] [CLOSED_S=8]
#
# Starts `scripts/real-server.sh start -np 8 -t 2` (the calibration's settings: 8 slots, 8192
# tokens of context), then for each repetition runs, interleaved, every (API, shape) pair:
# openai-completions and openai-chat, burst and closed (CLOSED_S seconds a level), at LEVELS, with
# 128 output tokens forced (`ignore_eos`) and the prompt cache off (`cache_prompt: false`, so
# every request prefills its prompt, as in the calibration). tokengun runs in-process (controller
# and agent in one process); its CPU is its rusage. Prints one table row per (API, shape, level),
# the repetitions pooled (mean of the levels' figures, min-max in brackets).
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
levels=${2:-1,2,4,8,16}
closed_s=${3:-8}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
need_release_bins
work=$(mktemp -d)
trap 'scripts/real-server.sh stop >/dev/null; rm -rf "$work"' EXIT

scripts/real-server.sh stop >/dev/null
url=$(scripts/real-server.sh start -np 8 -t 2)
echo "server: $url ($(cat "${XDG_CACHE_HOME:-$HOME/.cache}/tokengun/llama-server-11434/run/command"))"

for rep in $(seq "$reps"); do
  for api in openai-completions openai-chat; do
    for shape in burst closed; do
      id="$api-$shape-$rep"
      extra=()
      [[ $shape == closed ]] && extra=(--duration "${closed_s}s")
      python3 - "$work/$id.cpu" "$bin/tokengun" run --target "$url" --api "$api" --model smollm2 \
        --shape "$shape" --levels "$levels" "${extra[@]}" --max-tokens 128 \
        --extra-json '{"ignore_eos": true, "cache_prompt": false}' \
        --no-report -q --out "$work/runs" --run-id "$id" <<'PY' >"$work/$id.log" 2>&1 \
        || { echo "error: $id failed:" >&2; cat "$work/$id.log" >&2; exit 1; }
import resource, subprocess, sys, time
t0 = time.monotonic()
rc = subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime + u.ru_stime} {time.monotonic() - t0}\n")
sys.exit(rc)
PY
      echo "  done: $id ($(cut -d' ' -f1 "$work/$id.cpu") CPU s)" >&2
    done
  done
done

python3 - "$work" <<'PY'
import csv, glob, os, statistics, sys
work = sys.argv[1]
rows = {}
cpu = {}
for run in sorted(glob.glob(f"{work}/runs/*")):
    rid = os.path.basename(run)
    api, shape, rep = rid.rsplit("-", 2)
    cpu_s, wall_s = map(float, open(f"{work}/{rid}.cpu").read().split())
    cpu.setdefault((api, shape), []).append((cpu_s, wall_s))
    for c in csv.DictReader(open(f"{run}/cycles.csv")):
        key = (api, shape, int(c["level"]))
        reqs = []
        for p in glob.glob(f"{run}/openai/*/test_results_{c['level']}/request_summary.csv"):
            reqs += list(csv.DictReader(open(p)))
        rows.setdefault(key, []).append((c, reqs))

def fmt(vals, digits=1, scale=1.0):
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return "-"
    m = statistics.mean(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"

def num(c, k):
    v = c.get(k, "")
    return float(v) if v not in ("", None) else None

print("| API | shape | c | agg tok/s | TTFT p50 ms | ITL p50 ms | client decode tok/s/req | server decode tok/s/req | queue / prefill / decode ms (server) | tokens exact / checked |")
print("|---|---|---:|---|---|---|---|---|---|---|")
for (api, shape, level) in sorted(rows):
    runs = rows[(api, shape, level)]
    cyc = [c for c, _ in runs]
    reqs = [r for _, rs in runs for r in rs if r["Status"] == "Completed"]
    srv = [float(r["TokenCount"]) / float(r["ServerEvalDuration"]) for r in reqs
           if r.get("ServerEvalDuration") and float(r["ServerEvalDuration"]) > 0]
    cli = [float(r["TokensPerSecond"]) for r in reqs if r.get("TokensPerSecond")]
    exact = sum(int(c.get("server_token_exact") or 0) for c in cyc)
    checked = sum(int(c.get("server_token_checked") or 0) for c in cyc)
    parts = " / ".join(fmt([num(c, k) for c in cyc], 0, 1e3) for k in ("queue_s_mean", "prefill_s_mean", "decode_s_mean"))
    print(f"| {api} | {shape} | {level} | {fmt([num(c, 'aggregate_tokens_per_s') for c in cyc])} "
          f"| {fmt([num(c, 'ttft_p50_s') for c in cyc], 0, 1e3)} | {fmt([num(c, 'itl_p50_s') for c in cyc], 1, 1e3)} "
          f"| {fmt([statistics.mean(cli)] if cli else [])} | {fmt([statistics.mean(srv)] if srv else [])} "
          f"| {parts} | {exact} / {checked} |")
print()
for (api, shape), v in sorted(cpu.items()):
    c = sum(x for x, _ in v); w = sum(y for _, y in v)
    print(f"tokengun CPU, {api} {shape}: {c:.2f} s over {w:.0f} s wall = {c / w:.3f} cores (controller + in-process agent)")
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

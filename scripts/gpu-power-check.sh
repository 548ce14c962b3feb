#!/usr/bin/env bash
# Compares tokengun-agent's NVML sampler with nvidia-smi on a machine with an NVIDIA GPU:
# idle, then under a matrix-multiply load (when PyTorch is there), both read side by side.
# Usage: scripts/gpu-power-check.sh [path/to/tokengun-agent] [out-dir]
set -uo pipefail
AGENT=${1:-target/release/tokengun-agent}
OUT=${2:-${OUT:-gpu-check}}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpus.txt"
"$AGENT" probe --target http://127.0.0.1:1 | tee "$OUT/probe.txt"
Q=timestamp,power.draw,power.draw.instant,clocks.sm,utilization.gpu,memory.used,temperature.gpu
phase() { # name seconds
  nvidia-smi --query-gpu=$Q --format=csv,noheader,nounits -i 0 -lms 200 > "$OUT/smi-$1.csv" &
  local smi=$!
  "$AGENT" probe --target http://127.0.0.1:1 --sample "$2s" --interval 200ms > "$OUT/agent-$1.csv"
  kill $smi; wait $smi 2>/dev/null
  grep '^#' "$OUT/agent-$1.csv"
  python3 - "$OUT/smi-$1.csv" "$OUT/agent-$1.csv" <<'PY'
import sys, csv
smi = [r for r in csv.reader(open(sys.argv[1])) if len(r) >= 4]
f = lambda x: float(x.strip()) if x.strip() not in ("[N/A]", "") else None
avg = [f(r[1]) for r in smi if f(r[1]) is not None]
ins = [f(r[2]) for r in smi if f(r[2]) is not None]
sm = [f(r[3]) for r in smi if f(r[3]) is not None]
ag = [r for r in csv.reader(open(sys.argv[2])) if r and not r[0].startswith(("#", "t_s"))]
m = lambda k: [float(r[4]) for r in ag if r[1] == "nvml" and r[2] == "gpu0" and r[3] == k]
mean = lambda v: sum(v) / len(v) if v else float("nan")
print(f"nvidia-smi: {len(smi)} rows, power.draw mean {mean(avg):.1f} W, power.draw.instant mean {mean(ins):.1f} W, sm {mean(sm):.0f} MHz")
print(f"agent nvml: power_w (instant) mean {mean(m('power_w')):.1f} W, power_avg_w mean {mean(m('power_avg_w')):.1f} W, freq {mean(m('freq_mhz')):.0f} MHz, busy {mean(m('busy_pct')):.0f} %")
e = m("energy_j")
if len(e) > 1:
    t = [float(r[0]) for r in ag if r[2] == "gpu0" and r[3] == "energy_j"]
    print(f"agent nvml: energy counter {e[-1]-e[0]:.1f} J over {t[-1]-t[0]:.2f} s = {(e[-1]-e[0])/(t[-1]-t[0]):.1f} W")
PY
}
echo "== idle"
phase idle 6
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "== load (bf16 matmuls)"
  python3 -c "
import torch, time
a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16); b = torch.randn_like(a)
end = time.time() + 11
while time.time() < end:
    for _ in range(20): c = a @ b
    torch.cuda.synchronize()
" &
  load=$!
  sleep 2
  phase load 7
  wait $load
else
  echo "== no PyTorch with CUDA here: idle comparison only"
fi

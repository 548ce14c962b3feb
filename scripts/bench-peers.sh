#!/usr/bin/env bash
# tokengun beside Python peer load testers (GuideLLM, NVIDIA AIPerf) on the same simulator (issue 8).
#
#   scripts/bench-peers.sh [DURATION_S=30] [CONCURRENCY=8]
#   PEERS_VENV=DIR (default target/peers-venv): where the tools' virtualenvs, a tiny local tokenizer
#   and a fake Hugging Face cache holding it are made if missing. GUIDELLM_SPEC / AIPERF_SPEC
#   (default guidellm==0.8.1 / aiperf==0.13.0) pick what pip installs. PEERS="tokengun guidellm
#   aiperf" picks the tools. Installing needs PyPI only; GuideLLM pulls torch and its CUDA wheels
#   (~6 GB), AIPerf ~1.2 GB. vLLM's client (`vllm bench serve`) ships only inside the vllm wheel
#   (torch, CUDA kernels), so it is not measured here.
#
# Each tool runs as its whole process tree under a wrapper that makes itself a child subreaper and,
# once the tool and every orphaned descendant have exited and been reaped, reads
# getrusage(RUSAGE_CHILDREN): user + system CPU of the tool and all its workers (AIPerf spawns
# several processes), start-up and result writing included. tokengun runs as
# `tokengun run --target ...`, its agent inside the controller process, measured the same way.
#   1. `tokengun sim --profile firehose` (no delays, 1,000 tokens a request), OpenAI chat
#      completions streamed over SSE, CONCURRENCY streams closed-loop for DURATION_S, and again for
#      DURATION_S/3: the second run gives each tool's fixed cost (interpreter, imports, tokenizer,
#      reports), and (cpu_long - cpu_short) / (tokens_long - tokens_short) its marginal cost.
#      tokens = output tokens the tool itself reports (GuideLLM: completed + incomplete requests;
#      AIPerf: total_output_tokens; tokengun: cycles.csv output_tokens).
#   2. `tokengun sim --profile fast --slots 16` (150 ms from slot to first token, a token every
#      10 ms, 100 tokens, no queueing at 4 streams), 4 streams for DURATION_S: each tool's TTFT and
#      ITL against that truth. Client TTFT also holds connect + request write (~0.2-1 ms here).
# Simulator and tools share the machine's cores; the simulator's own CPU is printed beside each run.
# Linux only (/proc, prctl). Builds the release binary if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
duration_s=${1:-30}
concurrency=${2:-8}
short_s=$(( duration_s / 3 > 0 ? duration_s / 3 : 1 ))
venvs=${PEERS_VENV:-target/peers-venv}
mkdir -p "$venvs"
venvs=$(cd "$venvs" && pwd)
peers=${PEERS:-tokengun guidellm aiperf}
guidellm_spec=${GUIDELLM_SPEC:-guidellm==0.8.1}
aiperf_spec=${AIPERF_SPEC:-aiperf==0.13.0}
bin=target/release
if [[ ! -x $bin/tokengun ]]; then
  cargo build --release -p tokengun
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Offline: nothing may come from the Hugging Face hub; the tokenizer is the local one below.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_CACHE=$venvs/hf-cache
export PYTHONUNBUFFERED=1

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# --- install -------------------------------------------------------------------------------------
ok_tools=()
install_tool() { # name spec
  local name=$1 spec=$2 v=$venvs/$1
  if [[ -x $v/bin/$name ]]; then ok_tools+=("$name"); return 0; fi
  echo "installing $spec into $v (pip; GuideLLM brings torch, several GB) ..." >&2
  if python3 -m venv "$v" >"$work/$name-install.log" 2>&1 &&
     "$v/bin/pip" install -q --upgrade pip >>"$work/$name-install.log" 2>&1 &&
     "$v/bin/pip" install "$spec" >>"$work/$name-install.log" 2>&1 &&
     [[ -x $v/bin/$name ]]; then
    ok_tools+=("$name")
  else
    echo "skipping $name: install of $spec failed; last lines:" >&2
    tail -5 "$work/$name-install.log" >&2
    cp "$work/$name-install.log" "$venvs/$name-install.log" 2>/dev/null || true
  fi
}
for t in $peers; do
  case $t in
    tokengun) ok_tools+=(tokengun) ;;
    guidellm) install_tool guidellm "$guidellm_spec" ;;
    aiperf) install_tool aiperf "$aiperf_spec" ;;
    *) echo "skipping unknown tool $t" >&2 ;;
  esac
done

# --- a tiny local tokenizer (the tools insist on one; there is no hub to fetch a real one from) ---
# A WordLevel tokenizer trained on ~100 words, saved with PreTrainedTokenizerFast.save_pretrained,
# and also laid out as a Hugging Face cache entry `local/tiny-wordlevel`: AIPerf 0.13 in offline mode
# only resolves hub ids through the cache (a directory path fails with HFValidationError).
tok_dir=$venvs/tokenizer
tok_id=local/tiny-wordlevel
tok_py=
for t in aiperf guidellm; do [[ -x $venvs/$t/bin/python ]] && tok_py=$venvs/$t/bin/python && break; done
if [[ -n $tok_py && ! -f $tok_dir/tokenizer.json ]]; then
  "$tok_py" - "$tok_dir" <<'PY' >"$work/tokenizer.log" 2>&1 || { echo "warning: tokenizer build failed:" >&2; tail -5 "$work/tokenizer.log" >&2; }
import sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
words = ("the of and to in is was for on that with as by at from it an be this which or are "
         "time philosophy definition what token stream server client load test model request "
         "latency throughput first second minute hour day year measure count rate number value "
         "one two three four five six seven eight nine ten hello world lorem ipsum dolor sit amet "
         "consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua").split()
corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4
tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "<s>", "</s>"]))
PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>",
                        eos_token="</s>", model_max_length=1 << 20).save_pretrained(sys.argv[1])
print(AutoTokenizer.from_pretrained(sys.argv[1])("hello world")["input_ids"])
PY
fi
if [[ -f $tok_dir/tokenizer.json ]]; then
  rev=0000000000000000000000000000000000000000
  snap=$HF_HUB_CACHE/models--local--tiny-wordlevel/snapshots/$rev
  mkdir -p "$snap" "$HF_HUB_CACHE/models--local--tiny-wordlevel/refs"
  printf %s "$rev" >"$HF_HUB_CACHE/models--local--tiny-wordlevel/refs/main"
  cp "$tok_dir"/*.json "$snap"/
fi

# --- the measuring wrapper -----------------------------------------------------------------------
cat >"$work/measure.py" <<'PY'
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
t0 = time.monotonic()
rc = subprocess.Popen(sys.argv[2:]).wait()
wall = time.monotonic() - t0
left, deadline = 0, time.monotonic() + 30  # reap orphaned workers (re-parented to us) as they exit
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        if time.monotonic() > deadline:
            left = 1
            break
        time.sleep(0.05)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "unreaped": left,
           "load1": float(open("/proc/loadavg").read().split()[0])}, open(sys.argv[1], "w"))
sys.exit(rc)
PY

# --- runners: each writes $work/<tag>.log, <tag>.cpu.json and its results under $work/<tag>/ ------
run_tokengun() { # tag port conc dur
  python3 "$work/measure.py" "$work/$1.cpu.json" $bin/tokengun run --target "http://127.0.0.1:$2" \
    --api openai-chat --model deepseek-r1:7b --shape closed --levels "$3" --duration "${4}s" \
    --no-monitor --no-report -q --out "$work/$1" --run-id r
}
run_guidellm() { # tag port conc dur out_tokens
  python3 "$work/measure.py" "$work/$1.cpu.json" "$venvs/guidellm/bin/guidellm" run \
    --backend "kind=openai_http,target=http://127.0.0.1:$2,model=deepseek-r1:7b,validate_backend=false" \
    --profile "kind=concurrent,streams=$3" --constraint "kind=max_duration,seconds=$4" \
    --tokenizer "kind=hf_auto,model=$tok_dir" \
    --data "kind=synthetic_text,prompt_tokens=32,output_tokens=$5" \
    --output "kind=json,path=$work/$1/result.json" --disable-progress
}
run_aiperf() { # tag port conc dur out_tokens
  python3 "$work/measure.py" "$work/$1.cpu.json" "$venvs/aiperf/bin/aiperf" profile \
    --model deepseek-r1:7b --url "http://127.0.0.1:$2" --endpoint-type chat --streaming \
    --concurrency "$3" --benchmark-duration "$4" --tokenizer "$tok_id" \
    --prompt-input-tokens-mean 32 --prompt-output-tokens-mean "$5" \
    --ui none --no-server-metrics --no-gpu-telemetry --output-artifact-dir "$work/$1"
}
version_of() {
  case $1 in
    tokengun) $bin/tokengun --version | awk '{print $2}' ;;
    guidellm) "$venvs/guidellm/bin/pip" show guidellm 2>/dev/null | awk '/^Version/{print $2}' ;;
    aiperf) "$venvs/aiperf/bin/pip" show aiperf 2>/dev/null | awk '/^Version/{print $2}' ;;
  esac
}
# Prints: tokens ttft_mean_ms ttft_p99_ms itl_mean_ms itl_p99_ms (from the tool's own output)
extract() { # tool tag
  python3 - "$1" "$work/$2" <<'PY'
import csv, glob, json, sys
tool, d = sys.argv[1], sys.argv[2]
if tool == "tokengun":
    r = list(csv.DictReader(open(glob.glob(d + "/*/cycles.csv")[0])))[0]
    f = lambda k: float(r[k]) * 1000
    print(int(r["output_tokens"]), f("ttft_mean_s"), f("ttft_p99_s"), f("itl_mean_s"), f("itl_p99_s"))
elif tool == "guidellm":
    m = json.load(open(d + "/result.json"))["benchmarks"][0]["metrics"]
    toks = sum((m["output_token_count"].get(k) or {}).get("total_sum", 0) for k in ("successful", "incomplete"))
    t, i = m["time_to_first_token_ms"]["successful"], m["inter_token_latency_ms"]["successful"]
    print(int(toks), t["mean"], t["percentiles"]["p99"], i["mean"], i["percentiles"]["p99"])
else:
    j = json.load(open(glob.glob(d + "/profile_export_aiperf.json")[0]))
    toks = j.get("total_output_tokens") or {}
    toks = toks.get("avg", 0) if isinstance(toks, dict) else toks
    t, i = j["time_to_first_token"], j["inter_token_latency"]
    print(int(toks), t["avg"], t["p99"], i["avg"], i["p99"])
PY
}

rows=$work/rows.tsv
: >"$rows"
measure() { # tool profile sim_pid port conc dur out_tokens
  local tool=$1 prof=$2 sim_pid=$3 port=$4 conc=$5 dur=$6 out=$7 tag="$1-$2-$6s"
  mkdir -p "$work/$tag"
  echo "running $tool against $prof, $conc streams, ${dur}s ..." >&2
  local s0 s1
  s0=$(cpu_ticks "$sim_pid")
  if ! "run_$tool" "$tag" "$port" "$conc" "$dur" "$out" >"$work/$tag.log" 2>&1; then
    echo "  $tool failed on $prof (exit code above 0); last lines of its output:" >&2
    tail -8 "$work/$tag.log" | cut -c1-200 >&2
    cp "$work/$tag.log" "$venvs/$tag.log" 2>/dev/null && echo "  full log: $venvs/$tag.log" >&2
    return 0
  fi
  s1=$(cpu_ticks "$sim_pid")
  local fig
  if ! fig=$(extract "$tool" "$tag" 2>"$work/$tag.extract.err"); then
    echo "  could not read $tool's results: $(tail -1 "$work/$tag.extract.err")" >&2
    return 0
  fi
  python3 - "$work/$tag.cpu.json" "$tool" "$(version_of "$tool")" "$prof" "$conc" "$dur" \
    "$(( s1 - s0 ))" "$hz" $fig >>"$rows" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
tool, ver, prof, conc, dur, sim_ticks, hz = sys.argv[2:9]
tok, tm, tp, im, ip = sys.argv[9:14]
if c["unreaped"]:
    print(f"warning: {tool} left processes running 30 s after it exited: CPU undercounted", file=sys.stderr)
print("\t".join(map(str, [tool, ver, prof, conc, dur, c["wall_s"], c["cpu_s"], int(sim_ticks) / int(hz),
                          tok, tm, tp, im, ip, c["load1"]])))
PY
}

# --- runs ----------------------------------------------------------------------------------------
start_sim() { # profile extra-args... ; sets sim_pid sim_port
  sim_port=$(free_port)
  $bin/tokengun sim --profile "$1" "${@:2}" --listen "127.0.0.1:$sim_port" >"$work/sim-$1.log" 2>&1 &
  sim_pid=$!
  pids+=("$sim_pid")
  wait_port "$sim_port" "$work"
}
start_sim firehose
for t in "${ok_tools[@]}"; do
  measure "$t" firehose "$sim_pid" "$sim_port" "$concurrency" "$duration_s" 1000
  measure "$t" firehose "$sim_pid" "$sim_port" "$concurrency" "$short_s" 1000
done
kill "$sim_pid"
start_sim fast --slots 16
for t in "${ok_tools[@]}"; do
  measure "$t" fast "$sim_pid" "$sim_port" 4 "$duration_s" 100
done

# --- table ---------------------------------------------------------------------------------------
python3 - "$rows" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
hdr = ("tool", "version", "sim", "conc", "dur_s", "wall_s", "client_cpu_s", "sim_cpu_s", "tokens",
       "tokens/cpu_s", "wall_tok/s", "ttft_mean/p99_ms", "itl_mean/p99_ms", "load1")
print("\nSSE (OpenAI chat completions), closed loop. Truth on `fast`: TTFT 150 ms (+ connect), ITL 10 ms.")
print("ITL p99: tokengun over every gap; GuideLLM and AIPerf over per-request mean ITLs (not comparable).")
fmt = "{:<9} {:<8} {:<9} {:>4} {:>5} {:>7} {:>12} {:>9} {:>9} {:>12} {:>10} {:>17} {:>16} {:>5}"
print(fmt.format(*hdr))
for tool, ver, prof, conc, dur, wall, cpu, sim, tok, tm, tp, im, ip, load in rows:
    wall, cpu, tok = float(wall), float(cpu), int(tok)
    print(fmt.format(tool, ver, prof, conc, dur, f"{wall:.1f}", f"{cpu:.2f}", f"{float(sim):.2f}", tok,
                     f"{tok / cpu:,.0f}" if cpu else "-", f"{tok / wall:,.0f}",
                     f"{float(tm):.1f}/{float(tp):.1f}", f"{float(im):.2f}/{float(ip):.2f}", load))
print("\nfirehose, marginal cost (long run minus short run: start-up and reports taken out):")
by = {}
for r in rows:
    if r[2] == "firehose":
        by.setdefault(r[0], []).append((int(r[4]), float(r[6]), int(r[8]), float(r[5])))
for tool, runs in by.items():
    if len(runs) != 2:
        continue
    (d1, c1, t1, w1), (d0, c0, t0, w0) = sorted(runs, reverse=True)
    if t1 > t0 and c1 > c0:
        fixed = c0 - (c1 - c0) / (t1 - t0) * t0
        print(f"  {tool:<9} {(t1 - t0) / (c1 - c0):>12,.0f} tokens per client CPU second; "
              f"fixed cost ~{fixed:.1f} CPU s; cores used in the long run {c1 / w1:.2f}")
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

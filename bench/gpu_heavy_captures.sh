#!/usr/bin/env bash
# Device-side maker of the two held-out heavy real captures of issue 18 (run from the repo root on the GPU
# machine; carry `.gpu` from ../shared/gpu/prepare-carry.sh plus .gpu/wheels with the `transformers serve`
# extras, and .gpu/make_model.py, .gpu/load.py from ../shared/gpu/apps):
#   serve_heavy   - `transformers serve` (plain generate, no batching) of a Llama-3.2-1B-shaped model under 16
#                   concurrent streaming requests, traced with -t cuda,nvtx,osrt,python-gil through an nsys
#                   session (the server's threads make ~1M GIL ranges);
#   gpumetrics_heavy - an eager Llama-shaped decode loop of 4 agent threads for ~26 s with
#                   --gpu-metrics-devices=all at 10 kHz (22 metrics a sample: ~5.7M GPU_METRICS rows).
# Both are exported to SQLite there, xz-compressed and split into 15 MB parts. At most 64 MiB come
# back from one call (four parts; FROM=4 for the next four), and the two captures make ~9 parts (~130 MB): this call puts those of ONLY=serve_heavy
# or ONLY=gpumetrics_heavy (default: the first) under $OUT; a later call with SKIP_SERVE=1 SKIP_METRICS=1
# ONLY=... on the same warm machine brings the other's without capturing again.
set -uo pipefail
mkdir -p "$OUT" /tmp/heavy
exec > >(tee -a "$OUT/captures.txt") 2>&1
source .gpu/nsys-env.sh
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/hfcache TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/hfcache
for w in .gpu/wheels/*.whl; do
  mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
  case "$mod" in python_multipart) mod=multipart;; markdown_it_py) mod=markdown_it;; esac
  python3 -c "import $mod" 2>/dev/null && continue
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w" || exit 1
done
export PYTHONPATH="/tmp/site:$PWD/python"
export PATH="$(dirname "$(command -v python3)"):/tmp/site/bin:$PATH"
"$NSYS" --version
[ -f /tmp/model/config.json ] || python3 .gpu/make_model.py /tmp/model 2>&1 | tail -1

if [ "${SKIP_SERVE:-0}" != 1 ]; then
  t0=$(date +%s)
  "$NSYS" launch --session-new=heavy -t cuda,nvtx,osrt,python-gil \
    transformers serve /tmp/model --host 127.0.0.1 --port 8000 > /tmp/heavy/server.log 2>&1 &
  for i in $(seq 1 240); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v1/models', timeout=2)" 2>/dev/null && break
    sleep 1
  done
  echo "server ready after $(( $(date +%s) - t0 )) s"
  python3 .gpu/load.py http://127.0.0.1:8000 /tmp/model 1 | tail -1     # warm-up, not recorded
  "$NSYS" start --session=heavy -o /tmp/heavy/serve_heavy --force-overwrite=true
  t1=$(date +%s)
  python3 .gpu/load.py http://127.0.0.1:8000 /tmp/model "${SERVE_N:-16}" | tail -3
  echo "load in $(( $(date +%s) - t1 )) s"
  "$NSYS" stop --session=heavy
  # Exported before the shutdown: in the first real run `nsys shutdown` (or the wait for the server after
  # it) hung until the call's time limit, with the report already written.
  "$NSYS" export --type sqlite --force-overwrite=true -o /tmp/heavy/serve_heavy.sqlite /tmp/heavy/serve_heavy.nsys-rep
  timeout 60 "$NSYS" shutdown --session=heavy --kill=sigterm || echo "nsys shutdown did not finish in 60 s"
  timeout 30 tail --pid=$! -f /dev/null || kill -9 $! 2>/dev/null
  tail -3 /tmp/heavy/server.log
fi

if [ "${SKIP_METRICS:-0}" != 1 ]; then
  cat > /tmp/heavy/llm_timed.py <<'PY'
"""4 agent threads running eager Llama-shaped forwards for argv[1] seconds (apps/llm_threads.py, time-bound)."""
import sys, threading, time, torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=4, vocab_size=32000)
m = LlamaForCausalLM(cfg).half().cuda().eval()
seconds = float(sys.argv[1])
def agent(k):
    st = torch.cuda.Stream(); x = torch.randint(0, 32000, (1, 16), device="cuda")
    end = time.time() + seconds; j = 0
    with torch.no_grad(), torch.cuda.stream(st):
        while time.time() < end:
            torch.cuda.nvtx.range_push(f"agent {k} step {j}")
            m(x, use_cache=False).logits[:, -1].argmax(-1)
            st.synchronize()
            torch.cuda.nvtx.range_pop(); j += 1
with torch.no_grad(): m(torch.randint(0, 32000, (1, 16), device="cuda"), use_cache=False)
torch.cuda.synchronize()
ts = [threading.Thread(target=agent, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("ok")
PY
  "$NSYS" profile -t cuda,nvtx,osrt -s none --cpuctxsw=none --gpu-metrics-devices=all \
    --gpu-metrics-frequency=10000 -o /tmp/heavy/gpumetrics_heavy --force-overwrite true \
    python3 /tmp/heavy/llm_timed.py "${METRICS_S:-26}"
  "$NSYS" export --type sqlite --force-overwrite=true -o /tmp/heavy/gpumetrics_heavy.sqlite \
    /tmp/heavy/gpumetrics_heavy.nsys-rep
fi

cd /tmp/heavy
for f in ${ONLY:-serve_heavy}; do
  [ -f $f.sqlite ] || continue
  ls -la $f.sqlite
  python3 - "$f.sqlite" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for t in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME", "NVTX_EVENTS", "OSRT_API", "GPU_METRICS"):
    try:
        print(t, con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
    except sqlite3.Error as e:
        print(t, "-", e)
PY
  [ -f $f.sqlite.xz ] || xz -T16 -6 -k -f $f.sqlite
  # At most 64 MiB come back from one call: four 15 MB parts, from part ${FROM:-0} on (FROM=4 in a later
  # call on the warm machine brings the rest of gpumetrics_heavy's six).
  split -b 15M -d $f.sqlite.xz "/tmp/heavy/$f.sqlite.xz.part"
  for k in 0 1 2 3; do
    part=$(printf "/tmp/heavy/$f.sqlite.xz.part%02d" $(( ${FROM:-0} + k )))
    [ -f "$part" ] && cp "$part" "$OUT/"
  done
done
ls -la "$OUT"

#!/usr/bin/env bash
# Device-side driver of runners/transformers_serve.toml (run from the repo root on the GPU machine; see
# docs/runners.md). Carry `.gpu` (nsys libs from ../shared/gpu/prepare-carry.sh, plus .gpu/wheels: duckdb,
# click, rich and the `transformers serve` extras) and python/traceforge/_core.abi3.so.
# Usage: runners/gpu_transformers_serve.sh [--resume]   (a second call continues a sweep cut by the time
# limit of one device command: `traceforge run --resume` skips the finished cells)
set -uo pipefail
mkdir -p "$OUT" /tmp/tfrun
exec > >(tee -a "$OUT/log.txt") 2>&1
source .gpu/nsys-env.sh
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_CACHE=/tmp/hfcache
mkdir -p /tmp/hfcache
if [ ! -d /tmp/site ]; then
  # Only what the image lacks: a wheel shadowing the image's own copy could break torch or transformers.
  for w in .gpu/wheels/*.whl; do
    mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
    case "$mod" in python_multipart) mod=multipart;; pydantic_core) mod=pydantic_core;; markdown_it_py) mod=markdown_it;; esac
    python3 -c "import $mod" 2>/dev/null && continue
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w" || exit 1
  done
fi
export PYTHONPATH="/tmp/site:$PWD/python"
export PATH="$(dirname "$(command -v python3)"):/tmp/site/bin:$PATH"
command -v transformers >/dev/null || { echo "no transformers CLI"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$NSYS" --version
[ -f /tmp/model/config.json ] || { t0=$(date +%s); python3 .gpu/make_model.py /tmp/model 2>&1 | tail -1; echo "model in $(( $(date +%s) - t0 )) s"; }
spec=runners/transformers_serve.toml
# The help is read whole first: `nsys ... | grep -q` under pipefail fails when grep stops reading early.
start_help="$("$NSYS" start --help 2>&1)"
if ! grep -q -- "--gpu-metrics-devices" <<<"$start_help"; then
  echo "this nsys start has no --gpu-metrics-devices: GPU metrics left out"
  sed 's/, "--gpu-metrics-devices=all"//' "$spec" > /tmp/tfrun/spec.toml && spec=/tmp/tfrun/spec.toml
fi
t0=$(date +%s)
db="${TF_DB:-/tmp/tfrun/serve.duckdb}"
timeout -s TERM -k 60 "${SWEEP_LIMIT_S:-420}" python3 -m traceforge run "$spec" --db "$db" \
  --workdir /tmp/tfrun/cells "$@"
echo "sweep rc=$? in $(( $(date +%s) - t0 )) s"
[ "${PACKAGE:-1}" = 1 ] || exit 0
TF_DB="$db" python3 - <<'PY'
import duckdb, glob, os
src = duckdb.connect(os.environ["TF_DB"], read_only=True)
for row in src.execute("SELECT cell_id, status, reason, round(wall_s, 1), trace_id FROM cells ORDER BY started_at").fetchall():
    print(row)
print(src.execute("SELECT trace_id, device_id, kernel_count, round(utilization, 4), graph_launch_count FROM device_metrics").fetchall())
tables = [r[0] for r in src.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE'").fetchall()]
src.close()
if os.path.exists("/tmp/tfrun/results.duckdb"):
    os.unlink("/tmp/tfrun/results.duckdb")
out = duckdb.connect("/tmp/tfrun/results.duckdb")
out.execute(f"ATTACH '{os.environ['TF_DB']}' AS s (READ_ONLY)")
for t in tables:
    out.execute(f"CREATE TABLE {t} AS SELECT * FROM s.{t}")
    print(t, out.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
out.close()
PY
cd /tmp/tfrun
ls -la cells/*/*/trace.sqlite 2>/dev/null | awk '{print $5, $9}' | sort -n | head -40
tar cf bundle.tar results.duckdb $(ls cells/*/*/worker.log cells/*/*/events.jsonl cells/*/server_*/server.log 2>/dev/null)
xz -T16 -6 -f bundle.tar && split -b 15M -d bundle.tar.xz "$OUT/bundle.tar.xz.part"
# The smallest export of a continuous-batching (graph) cell and of a plain cell: candidate test fixtures.
for kind in cb_graphs plain; do
  f=$(ls -S cells/*/*${kind}*/trace.sqlite 2>/dev/null | tail -n 1)
  [ -n "$f" ] && xz -T16 -6 -k -c "$f" > "$OUT/${kind}_$(basename "$(dirname "$f")").sqlite.xz" && echo "fixture $kind: $f"
done
ls -la "$OUT"

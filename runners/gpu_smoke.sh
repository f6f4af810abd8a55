#!/usr/bin/env bash
# Device-side driver of the TR131 smoke sweep (run from the repo root on the GPU machine, see docs/runners.md).
# Expects .gpu (nsys libs) and .whl (duckdb wheel) carried, python/traceforge/_core.abi3.so present.
set -uo pipefail
mkdir -p "$OUT" /tmp/gpu
exec > >(tee "$OUT/log.txt") 2>&1
source .gpu/nsys-env.sh
export PYTHONUNBUFFERED=1 NCU="$(command -v ncu)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/python"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
t0=$(date +%s)
timeout 420 python3 -m traceforge run runners/tr131_gpu_smoke.toml --db /tmp/gpu/run.duckdb --workdir /tmp/gpu/cells
echo "sweep rc=$? in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout 150 python3 -m traceforge run runners/tr131_gpu_streams.toml --db /tmp/gpu/run.duckdb --workdir /tmp/gpu/cells_streams
echo "streams sweep rc=$? in $(( $(date +%s) - t0 )) s"
python3 -m traceforge runs --db /tmp/gpu/run.duckdb --format json > /tmp/gpu/runs.json
python3 - <<'PY'
import duckdb
src = duckdb.connect("/tmp/gpu/run.duckdb", read_only=True)
print(src.execute("SELECT cell_id, status, reason, wall_s, trace_id, ncu_status FROM cells").fetchall())
print(src.execute("SELECT trace_id, device_id, kernel_count, utilization, max_concurrency, stream_count, gap_count, gap_p50_ns FROM device_metrics").fetchall())
src.close()
out = duckdb.connect("/tmp/gpu/runner_tables.duckdb")
out.execute("ATTACH '/tmp/gpu/run.duckdb' AS s (READ_ONLY)")
for t in ("runs", "cells", "requests", "telemetry", "ncu_metrics", "device_metrics", "stream_metrics", "kernel_summary", "concurrency_levels", "traces"):
    out.execute(f"CREATE TABLE {t} AS SELECT * FROM s.{t}")
out.close()
PY
cd /tmp/gpu
ls -la cells/*/* || true
tar cf bundle.tar runner_tables.duckdb runs.json $(ls cells/*/*/ncu.*.csv cells/*/*/worker.log cells/*/*/events.jsonl cells/*/*/ncu_run_k*/worker.log cells_streams/*/*/worker.log 2>/dev/null)
cp "$OUT/log.txt" log.copy.txt 2>/dev/null; xz -T16 -6 bundle.tar && cp bundle.tar.xz "$OUT/"
i=0
for f in cells/*/*/trace.sqlite; do
  i=$((i+1)); xz -T16 -6 -k -c "$f" > "trace$i.sqlite.xz"
  echo "trace$i = $f $(stat -c %s "$f") bytes"
  split -b 15M -d "trace$i.sqlite.xz" "$OUT/trace$i.sqlite.xz.part"
done
ls -la "$OUT"

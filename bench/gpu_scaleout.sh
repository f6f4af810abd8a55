#!/usr/bin/env bash
# Device-side driver of bench/bench_scaleout.py on the 16-core GPU host (run from the repo root there).
# Carry `.gpu` (.gpu/wheels: duckdb, click, rich; .gpu/wheels-dask: dask, distributed and their pure-Python
# dependencies) and python/traceforge/_core.abi3.so. Only wheels whose module the image lacks are installed.
# With .gpu/old/python (another build's Python package, e.g. `git archive REV python/traceforge | tar -x -C
# .gpu/old`), its rows run too as the same-run peer (bench_scaleout.py --peer); it gets this core's .so.
set -uo pipefail
mkdir -p "$OUT"
exec > >(tee -a "$OUT/scaleout.txt") 2>&1
for w in .gpu/wheels/duckdb-*.whl .gpu/wheels/click-*.whl .gpu/wheels/rich-*.whl .gpu/wheels/markdown_it*.whl \
         .gpu/wheels/mdurl-*.whl .gpu/wheels-dask/*.whl; do
  mod=$(basename "$w" | cut -d- -f1 | tr 'A-Z' 'a-z')
  case "$mod" in pyyaml) mod=yaml;; markdown_it_py) mod=markdown_it;; esac
  python3 -c "import $mod" 2>/dev/null && continue
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w" 2>&1 | grep -v "already exists" || true
done
export PYTHONPATH="/tmp/site:$PWD/python" PYTHONUNBUFFERED=1
python3 -c "import dask, distributed, duckdb, traceforge; print('dask', dask.__version__, 'duckdb', duckdb.__version__, 'traceforge', traceforge.__version__)"
nproc; free -g | head -2
peer=()
if [ -d .gpu/old/python/traceforge ]; then
  cp python/traceforge/_core.abi3.so .gpu/old/python/traceforge/ && peer=(--peer "$PWD/.gpu/old/python")
fi
timeout "${SCALEOUT_LIMIT_S:-480}" python3 bench/bench_scaleout.py "${peer[@]}" --files "${FILES:-64}" --jobs "${JOBS:-1,4,8,16}" \
  --loaders "${LOADERS:-}" --waits "${WAITS:-}" --groups "${LOAD_GROUPS:-}" \
  --start-cluster "${CLUSTER:-16}" --workdir /tmp/scaleout --fixtures tests/data --json "$OUT/scaleout.json"
echo "bench rc=$?"

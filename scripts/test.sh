#!/usr/bin/env bash
# The whole test suite from a clean checkout (the README's test command; .ci/run execs exactly this).
# 1. System test tools, all from Debian's packages (needs root or sudo): nsys 2022.4 as the oracle and for
#    the .nsys-rep path, a headless Chromium for the report, xxhash for the independent fingerprint check.
# 2. The venv with the package and its test extras (editable, release build of the extension).
# 3. In turn: scripts/lint.sh, scripts/test-rust.sh, scripts/test-python.sh (extra arguments go to pytest).
#    All three run even when one fails; the exit status is non-zero if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRACEFORGE_VENV:-.venv}"
export TRACEFORGE_VENV="${venv}"

bash scripts/install-nsys.sh
bash scripts/install-chromium.sh
if ! command -v xxh128sum >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    ${SUDO} apt-get -o DPkg::Lock::Timeout=900 update -qq
    ${SUDO} apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends xxhash >/dev/null
fi

[ -x "${venv}/bin/python" ] || "${PYTHON:-python3}" -m venv "${venv}"
"${venv}/bin/python" -m pip install -q --upgrade pip
MATURIN_PEP517_ARGS="--profile release" "${venv}/bin/python" -m pip install -q -e ".[test]"

failed=()
for part in lint test-rust test-python; do
    echo "test.sh: scripts/${part}.sh"
    if [ "${part}" = test-python ]; then
        bash "scripts/${part}.sh" "$@" || failed+=("${part}")
    else
        bash "scripts/${part}.sh" || failed+=("${part}")
    fi
done
if [ "${#failed[@]}" -ne 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: lint, Rust tests and Python tests passed"

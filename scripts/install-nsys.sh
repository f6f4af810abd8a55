#!/usr/bin/env bash
# Install Debian's Nsight Systems CLI (nsys 2022.4, package `nsight-systems` from non-free).
#
# traceforge's tests use it as an independent oracle (`nsys stats`) and for the `.nsys-rep` path
# (`nsys export`). Idempotent: does nothing when an nsys 2022.4 is already on PATH. Needs root (or sudo)
# and a Debian bookworm apt source. Usage: scripts/install-nsys.sh
set -euo pipefail

want="2022.4"

have_version() {
    command -v nsys >/dev/null 2>&1 || return 1
    nsys --version 2>/dev/null | grep -q "${want}"
}

if have_version; then
    echo "install-nsys: $(nsys --version | head -n1) already installed at $(command -v nsys)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-nsys: needs root or sudo" >&2; exit 1; }
    SUDO="sudo"
fi

# Enable contrib and non-free on every Components: line of the deb822 sources (the package lives in
# non-free); the old one-line sources.list format is handled too.
sources=/etc/apt/sources.list.d/debian.sources
if [ -f "${sources}" ]; then
    if ! grep -E '^Components:.*\bnon-free\b' "${sources}" >/dev/null; then
        ${SUDO} sed -i -E '/^Components:/ { / contrib( |$)/! s/$/ contrib/; / non-free( |$)/! s/$/ non-free/ }' "${sources}"
    fi
elif [ -f /etc/apt/sources.list ]; then
    if ! grep -E '^deb .* non-free( |$)' /etc/apt/sources.list >/dev/null; then
        ${SUDO} sed -i -E '/^deb / { / contrib( |$)/! s/$/ contrib/; / non-free( |$)/! s/$/ non-free/ }' \
            /etc/apt/sources.list
    fi
else
    echo "install-nsys: no apt sources found (is this Debian?)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
${SUDO} apt-get -o DPkg::Lock::Timeout=900 update -qq
${SUDO} apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends nsight-systems >/dev/null

if ! have_version; then
    echo "install-nsys: installed nsight-systems but 'nsys --version' does not report ${want}:" >&2
    nsys --version >&2 || true
    exit 1
fi
echo "install-nsys: $(nsys --version | head -n1) installed at $(command -v nsys)"

#!/usr/bin/env bash
# Idempotent set-up: Debian system libraries for headless rendering (Mono for the C# tests, chromium and its
# driver for the live page's browser test),
# a virtualenv in .venv, torch's CPU build first, then xrfed with its extras. Re-running skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${XRFED_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
APT_PACKAGES="libegl1 libgl1 libglx-mesa0 libegl-mesa0 libgl1-mesa-dri libosmesa6 mono-mcs mono-runtime chromium chromium-driver"

say() { printf '[setup] %s\n' "$*"; }

# Every tool's own output goes to one log; a failing step names it and shows its last lines.
LOG=${XRFED_SETUP_LOG:-$(pwd)/.setup.log}
: > "$LOG"
step() {  # step "what it does" command args...
  local what=$1; shift
  if ! "$@" >>"$LOG" 2>&1; then
    say "FAILED: $what"
    say "the full output is in $LOG; its last lines:"
    tail -n 20 "$LOG" | sed 's/^/    /'
    exit 1
  fi
}

# -- system libraries ----------------------------------------------------------------------------------
missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages:$missing"
    apt-get update -qq >>"$LOG" 2>&1 || say "apt-get update failed (see $LOG); trying the install anyway"
    step "apt-get install$missing" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "installing Debian packages with sudo:$missing"
    sudo apt-get update -qq >>"$LOG" 2>&1 || true
    step "sudo apt-get install$missing" sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
  else
    say "missing Debian packages:$missing"
    say "you are not root: run   sudo apt-get install -y$missing   then re-run this command."
    say "(headless rendering needs EGL or OSMesa; the C# codec tests need Mono and are skipped without it)"
  fi
fi

# -- virtualenv + Python packages ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  step "python -m venv $VENV" "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.xrfed-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  say "environment up to date ($VENV)"
  exit 0
fi
$PIP install -q --upgrade pip >>"$LOG" 2>&1 || say "could not upgrade pip (see $LOG); going on with the one there"
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION (CPU build) first"
  step "pip install torch==$TORCH_VERSION" $PIP install "torch==$TORCH_VERSION"
fi
say "installing xrfed and its extras"
# One resolve for all extras: the unity extra's protobuf==5.29.5 satisfies Ray and Flower (>=5.28,<7).
step "pip install -e .[dev,speech,usd,unity,ray,flower,rl]" $PIP install -e ".[dev,speech,usd,unity,ray,flower,rl]"
# mlagents-envs 1.1.0 declares Python <= 3.10.12 but runs on 3.11; it is the only release that decodes the current
# Unity package's channels-first observations (see docs/unity.md), so it is installed without its pins.
if ! "$VENV/bin/python" -c "import mlagents_envs" 2>/dev/null; then
  say "installing mlagents-envs 1.1.0 (--no-deps --ignore-requires-python)"
  step "pip install mlagents-envs==1.1.0" $PIP install --no-deps --ignore-requires-python "mlagents-envs==1.1.0"
fi
# Its message modules are protoc-3 code that protobuf 5 cannot run: rewrite them into the builder form (same
# descriptors, same bytes; idempotent, see bridge/unity/protos.py).
step "rewrite mlagents-envs' message modules for protobuf 5" "$VENV/bin/python" -m bridge.unity.protos
rm -f "$VENV"/.xrfed-setup-*
touch "$stamp"
say "done: activate with   source $VENV/bin/activate"

# shellcheck shell=bash
# Sourced by the other scripts: makes sure the libtorch venv exists (creating it only when
# missing) and exports what the tch build needs. Override the venv location with SHARDFUZZ_VENV.
TORCH_VERSION=2.11.0
: "${SHARDFUZZ_VENV:=${XDG_CACHE_HOME:-$HOME/.cache}/shardfuzz/venv-torch-$TORCH_VERSION}"
export SHARDFUZZ_VENV

_sf_torch_ok() {
  [ -x "$SHARDFUZZ_VENV/bin/python" ] &&
    "$SHARDFUZZ_VENV/bin/python" - "$TORCH_VERSION" >/dev/null 2>&1 <<'PY'
import sys, torch
sys.exit(0 if torch.__version__.split('+')[0] == sys.argv[1] else 1)
PY
}

if ! _sf_torch_ok; then
  echo "shardfuzz: installing torch==$TORCH_VERSION into $SHARDFUZZ_VENV (once; about 2 minutes, 4.6 GB)" >&2
  PY=${SHARDFUZZ_PYTHON:-python3}
  command -v "$PY" >/dev/null || { echo "shardfuzz: python3 not found; install Python 3.9+ with venv and pip" >&2; exit 2; }
  "$PY" -m venv "$SHARDFUZZ_VENV" || { echo "shardfuzz: could not create a venv at $SHARDFUZZ_VENV" >&2; exit 2; }
  "$SHARDFUZZ_VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" ||
    { echo "shardfuzz: pip install torch==$TORCH_VERSION failed" >&2; exit 2; }
  _sf_torch_ok || { echo "shardfuzz: $SHARDFUZZ_VENV does not hold torch $TORCH_VERSION" >&2; exit 2; }
fi

export PATH="$SHARDFUZZ_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
unset LIBTORCH LIBTORCH_LIB LIBTORCH_INCLUDE

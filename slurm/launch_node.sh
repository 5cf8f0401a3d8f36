#!/bin/bash
# One node's share of a run: torchrun with this node's rank in the Slurm step. Started by
# srun (one task per node) from sweep_kopt.sbatch; arguments are Hydra overrides.
set -euo pipefail
NODE_RANK=${SLURM_NODEID:?run under srun}
exec "${PKPO_PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:?}" --nproc-per-node="${NPROC_PER_NODE:?}" --node-rank="$NODE_RANK" \
    --master-addr="${MASTER_ADDR:?}" --master-port="${MASTER_PORT:?}" \
    -m pkpo.train "$@"

#!/bin/bash
# Multi-node distillation on SLURM: one torchrun agent per node, c10d rendezvous on the first node.
# Nothing clipdistill-specific: the command after `-m clipdistill` is exactly what you run on one machine.
#SBATCH --job-name=clipdistill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8

srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc_per_node 8 \
  --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" --rdzv_id "$SLURM_JOB_ID" \
  -m clipdistill distill configs/cid.yaml \
    --out "runs/cid-$SLURM_JOB_ID" --resume latest \
    --set train.device=cuda --set train.precision=bf16 \
    --set data.source='/data/laion/{00000..31999}.tar' --set data.num_workers=8

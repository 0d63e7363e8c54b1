#!/bin/bash
# Multi-node distillation on SLURM: one torchrun agent per node, c10d rendezvous on the first node.
# The command after `-m clipdistill` is exactly what you run on one machine.
#
# Preemption / time limit: 90 s before SLURM ends the job it sends SIGUSR1 to this batch shell
# (`--signal=B:USR1@90`). The trap passes it to every task of the step (torchrun, which forwards the signals in
# TORCHELASTIC_SIGNALS_TO_HANDLE to its workers); every rank finishes its optimizer step, the ranks agree on the
# step, rank 0 writes a checkpoint and they exit 138 (128 + SIGUSR1). The job then requeues itself: the same
# SLURM_JOB_ID, so the same --out, and `--resume latest` continues from that checkpoint (a fresh --out simply
# starts). One optimizer step and the checkpoint write must fit in the 90 s (and in torchrun's own 30 s grace
# after it forwards the signal). A plain SIGTERM (scancel, preemption without the warning) is handled the same
# way by the workers.
#SBATCH --job-name=clipdistill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8
export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1

preempted=0
on_usr1() {
  preempted=1
  echo "$(date -Is) SIGUSR1: asking every rank to checkpoint and stop"
  scancel --signal=USR1 "$SLURM_JOB_ID"  # every task of the job's steps; not this batch shell
}
trap on_usr1 USR1

srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc_per_node 8 \
  --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" --rdzv_id "$SLURM_JOB_ID" \
  -m clipdistill distill configs/cid.yaml \
    --out "runs/cid-$SLURM_JOB_ID" --resume latest \
    --set train.device=cuda --set train.precision=bf16 \
    --set data.source='/data/laion/{00000..31999}.tar' --set data.num_workers=8 &
step=$!
status=0
wait "$step" || status=$?  # returns early when the trap runs ...
if [ "$preempted" = 1 ]; then
  wait "$step" || status=$?  # ... so wait for the checkpoint and the exit
  echo "$(date -Is) stopped with a checkpoint (exit $status); requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$status"

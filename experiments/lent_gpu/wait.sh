# On the lent GPU: wait for the detached sweep (at most WAIT_S seconds), print one line per
# run, and pack the run folders without checkpoints into $OUT/runs.tgz (each call's result).
# usage: bash experiments/lent_gpu/wait.sh WAIT_S
source experiments/lent_gpu/env.sh
end=$(( $(date +%s) + $1 ))
while pgrep -f experiments.repro_sweep > /dev/null && [ "$(date +%s)" -lt "$end" ]; do
  sleep 60
  echo "$(date +%T) $(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader) load $(cut -d' ' -f1 /proc/loadavg)"
done
python3 experiments/lent_gpu/summary.py /tmp/runs
tail -c 400 /tmp/runs/sweep/sweep.out; echo
# a float32 checkpoint with Adam state is ~1.6 GB: never pack those
cd /tmp/runs && tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude='*.pt' --exclude='ds_step*' . && ls -la "$OUT"

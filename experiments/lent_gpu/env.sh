# Environment of every command on the lent GPU (carried wheels, model cache, no hub).
export PYTHONPATH=/tmp/site:$PWD PKPO_CACHE=/tmp/pkpo_cache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True PYTHONUNBUFFERED=1 WANDB_MODE=disabled

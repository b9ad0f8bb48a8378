#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Uses torchrun; without CUDA the processes talk over gloo (tools/test.py switches the backend).
set -euo pipefail
CONFIG=$1; CKPT=$2; NPROC=$3; shift 3
NNODES=${NNODES:-1} NODE_RANK=${NODE_RANK:-0} PORT=${PORT:-29500} MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
cd "$(dirname "$0")/.."
exec python -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" tools/test.py "$CONFIG" "$CKPT" --launcher pytorch "$@"

#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args: --mini, --out, --cfg-options ...]
# torchrun, NUM_PROCS processes on this node; without CUDA they run on CPUs over gloo (tools/test.py).
set -euo pipefail
CONFIG=$1; CKPT=$2; NPROC=$3; shift 3
cd "$(dirname "$0")/.."
source tools/dist_env.sh
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" tools/test.py "$CONFIG" "$CKPT" --launcher pytorch "$@"

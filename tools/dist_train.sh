#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [train.py args: --mini, --resume, --cfg-options ...]
# torchrun, NUM_PROCS processes on this node; without CUDA they train on CPUs over gloo (tools/train.py).
# Several nodes: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0> PORT=<free port> on each (docs/cluster.md).
set -euo pipefail
CONFIG=$1; NPROC=$2; shift 2
cd "$(dirname "$0")/.."
source tools/dist_env.sh
exec "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" tools/train.py "$CONFIG" --launcher pytorch "$@"

# Sourced by tools/dist_train.sh and tools/dist_test.sh: rendezvous settings, overridable from the environment.
# PORT defaults to a free port of this machine (a fixed 29500 collides with any other job on the node); a
# multi-node job must set the same PORT on every node.
PYTHON=${PYTHON:-python}
NNODES=${NNODES:-1} NODE_RANK=${NODE_RANK:-0} MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${PORT:-}" ]; then
    [ "$NNODES" = 1 ] || { echo "set PORT (the same free port on every node) for a multi-node run" >&2; exit 2; }
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
fi

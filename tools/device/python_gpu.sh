#!/usr/bin/env bash
# The Python GPU tests on the GPU machine: python/tests/test_low_latency_gpu.py
# and test_normal_gpu.py through pytest when the machine's python has it;
# otherwise their rank programs directly, two ranks against one epxd, each
# of which must print "rank N ok" (the same checks, without pytest).
#   tools/device/python_gpu.sh BIN_DIR   (BIN_DIR: epxd, epxctl, libepx_c.so)
set -uo pipefail
bin=$1
export EPX_LIBRARY=$bin/libepx_c.so EPX_EPXD=$bin/epxd EPX_EPXCTL=$bin/epxctl PYTHONDONTWRITEBYTECODE=1
if python3 -c "import pytest" 2>/dev/null; then
  exec python3 -m pytest python/tests/test_low_latency_gpu.py python/tests/test_normal_gpu.py -q -rs \
    -p no:cacheprovider
fi
echo "pytest is not installed here: running the rank programs directly"
dir=$(mktemp -d)
"$bin/epxd" --node-name a --control-socket "$dir/a.sock" --peer-listen 127.0.0.1:0 --provider shm \
  --log-level info >"$dir/epxd.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -S $dir/a.sock ]] && break; sleep 0.1; done
export EPX_SOCKET=$dir/a.sock
failed=0
run() {  # name script args...: two ranks
  local name=$1 script=$2
  shift 2
  local pids=() r
  for r in 0 1; do
    python3 "python/tests/$script" "$dir/$name.rdv" "$r" 2 "$@" >"$dir/$name.$r.log" 2>&1 &
    pids+=($!)
  done
  for r in 0 1; do
    if wait "${pids[$r]}" && grep -q "rank $r ok" "$dir/$name.$r.log"; then
      echo "PASSED $name rank $r"
    else
      echo "FAILED $name rank $r:"
      tail -n 30 "$dir/$name.$r.log"
      failed=1
    fi
  done
}
run low_latency_hook0 gpu_rank_main.py 0
run low_latency_hook1 gpu_rank_main.py 1
run normal normal_gpu_rank_main.py
exit $failed

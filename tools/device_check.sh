#!/usr/bin/env bash
# The checks that need a GPU, as one script for one short session on a CUDA host (CI has no GPU):
#   1. tools/cuda_check.py        the handler on CUDA: dtype choice (bf16 at compute capability >= 8.0), the T4
#                                 fp16 rule (wo in fp32), the iteration-level loop against generate();
#   2. llmdeploy calibrate        --device cuda on FLAN-T5-xl's and -small's shapes (random weights, bf16): the
#                                 numbers for llmdeploy/data/calibrations.toml;
#   3. tools/check_djl_engine.py  the packaged handler inside DJL's real Python engine, on the GPU;
#   4. tools/profile_decode.py    the iteration-level loop's step against generate's token at batch 1/8/32: wall
#                                 time, kernel launches, top operators, and the loop with matmul+softmax attention;
#   5. benchmarks/bench_serve.py  --device cuda: iteration-level vs static batching vs in-process generate
#                                 (one-at-a-time is left out: on a GPU it is all waiting, minutes for nothing).
# Each step has its own time limit and the next one runs whatever the last one did; results land in $OUT.
#
#   OUT=/tmp/results bash tools/device_check.sh            # on the GPU host, from anywhere
#   DEVICE=cpu QUICK=1 OUT=/tmp/dry bash tools/device_check.sh   # a dry run of the script itself on a CPU
#   ONLY="bench-small bench-big" OUT=... bash tools/device_check.sh   # some steps only (build always runs)
#
# The project is imported from where it is installed; without an install, from a wheel in .whl/
# (`pip wheel --no-deps --no-build-isolation -w .whl .`). The DJL engine check needs djl-serving's
# engines/python/setup and gradle/libs.versions.toml of the pinned branch in .djl/djl-serving (or DJL_SERVING=DIR).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/device-results}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
ONLY=${ONLY:-}
DJL_SERVING=${DJL_SERVING:-$ROOT/.djl/djl-serving}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
WORK=$(mktemp -d /tmp/device-check-XXXXXX)
cd "$WORK" || exit 1  # not the repo root: there ./llmdeploy would shadow the installed package's subpackages
if ! python3 -c "import llmdeploy.handlers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$ROOT"/.whl/llmdeploy-*.whl || exit 1
    export PYTHONPATH="$WORK/site"
fi

step() {  # step NAME SECONDS COMMAND...: run it under a limit, say how it ended
    local name=$1 limit=$2 start rc
    shift 2
    case " build $ONLY " in *" $name "*) ;; *) [ -n "$ONLY" ] && { echo "=== $name: not in ONLY"; return; } ;; esac
    echo "=== $name (limit ${limit} s)"
    start=$(date +%s)
    timeout "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - start)) s"
}

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    BIG=flan-t5-xl
else
    BIG=flan-t5-small
fi
python3 -c "import sys, torch, transformers, tokenizers; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'cuda', torch.version.cuda, \
'cpus', __import__('os').cpu_count())"

step build 120 python3 - "$ROOT" "$WORK" "$DEVICE" "$BIG" <<'EOF'
import sys
from pathlib import Path
root, work, device, big = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, str(root / "benchmarks"))
import bench_serve
bench_serve.build_model(work / "flan-t5-small", "flan-t5-small", "cpu")  # folder names: the calibration's model name
bench_serve.build_model(work / big, big, device)
print("built", sorted(p.name for p in work.iterdir()))
EOF

step cuda-check 90 python3 "$ROOT/tools/cuda_check.py" "$WORK/flan-t5-small" --device "$DEVICE" --json "$OUT/cuda-check.json"
if [ "$DEVICE" = cuda ]; then
    step calibrate-big 150 sh -c "python3 -m llmdeploy.cli.main calibrate --model '$WORK/$BIG' --device cuda --json \
        --out '$WORK/cal-big.json' > '$OUT/calibrate-$BIG.json'"
    step calibrate-small 90 sh -c "python3 -m llmdeploy.cli.main calibrate --model '$WORK/flan-t5-small' --device cuda --json \
        --out '$WORK/cal-small.json' > '$OUT/calibrate-flan-t5-small.json'"
else
    step calibrate-small 300 sh -c "python3 -m llmdeploy.cli.main calibrate --model '$WORK/flan-t5-small' --device cpu --batch 1 \
        --batch 2 --json --out '$WORK/cal-small.json' > '$OUT/calibrate-flan-t5-small.json'"
fi
if [ -d "$DJL_SERVING" ]; then
    step djl-engine 120 python3 "$ROOT/tools/check_djl_engine.py" --djl-serving "$DJL_SERVING" --model "$WORK/flan-t5-small"
else
    echo "=== djl-engine: skipped, no $DJL_SERVING"
fi
step profile-decode 120 sh -c "python3 '$ROOT/tools/profile_decode.py' '$WORK/$BIG' --device '$DEVICE' \
    $([ "$QUICK" = 1 ] && echo '--batches 1 4 --steps 4') --json '$OUT/profile-decode-$BIG.json' > '$OUT/profile-decode-$BIG.txt' 2>&1"
if [ "$QUICK" = 1 ]; then
    quick=(--requests 8 --clients 4 --workloads uniform --skip one-at-a-time static ct2)
else
    quick=(--skip one-at-a-time ct2)
fi
step bench-small 150 sh -c "python3 '$ROOT/benchmarks/bench_serve.py' --device '$DEVICE' --model-dir '$WORK/flan-t5-small' \
    ${quick[*]} --json > '$OUT/bench-serve-flan-t5-small.txt' 2>&1"
if [ "$BIG" != flan-t5-small ]; then
    step bench-big 150 sh -c "python3 '$ROOT/benchmarks/bench_serve.py' --device '$DEVICE' --shape '$BIG' \
        --model-dir '$WORK/$BIG' --workloads mixed --skip one-at-a-time ct2 --json > '$OUT/bench-serve-$BIG.txt' 2>&1"
fi
rm -rf "$WORK"
echo "=== done: $(ls "$OUT")"

#!/usr/bin/env bash
# The speed targets' GPU measurements (benchmarks/README.md) in one go, on a GPU machine. From the repository root:
#
#     bash benchmarks/gpu_check.sh OUT_DIR
#
# The steps run most important first, so that a short lease still measures the targets: the three benches of
# the speed target, the peer comparison, the speed run's step, then what compiles (inductor spends a minute or
# more per model). A step that would start after BUDGET seconds is skipped and says so in status.txt.
# Writes everything to OUT_DIR (one file per command; each bench file ends with a JSON line):
#   nvidia-smi.txt, install.log, hardware.txt
#   bench_{simclr,byol,moco_v2}.txt          python -m sslbook bench METHOD --preset full, batch 512, 32 px,
#                                            random CIFAR-shaped data (50,000 images), the default data path
#   peer_lightly.txt                         benchmarks/peer_lightly.py for the three methods (if lightly imports)
#   bench_simclr_speedrun{,_compile}.txt     the speed run's recipe (--preset speedrun: LARS, batch 512, 32 px):
#                                            its seconds per 50,000-image epoch (× 500 epochs: the whole schedule)
#   bench_simclr_loader.txt                  SimCLR on the DataLoader path (for comparison)
#   train_simclr_speedrun_random.txt         the speed run through the trainer for 5 epochs on noise of CIFAR-10's
#                                            shape, compiled: train_seconds (compilation in the first epoch) and
#                                            the kNN checks' seconds (the accuracy needs real CIFAR-10)
#   bench_{simclr,byol,moco_v2}_compile.txt  with --compile
#   pytest_bench.txt                         tests/test_bench.py on this machine (its GPU branches run here)
#   status.txt                               the exit status (or the skip) of every command
#   NAME.json                                the JSON line of every bench that succeeded: copy these into
#                                            benchmarks/results/ and chapter 12 shows them with their hardware
# Environment: PYTHON (default python), STEPS (timed steps, default 50), LIMIT (seconds per command, default 240),
# BUDGET (seconds after which no further step starts, default 3600), WHEELS (a folder of wheels to install
# without an index first, e.g. lightly's on a machine that reaches no registry: benchmarks/README.md),
# EXTRA (more arguments for every bench and peer command, e.g. "--backbone convnet_small --batch-size 32
# --images 256" for a dry run on a CPU), TRAIN_EXTRA (the same for the train command, e.g. "--backbone
# convnet_small --batch-size 32 --max-steps 2"), SKIP_INSTALL=1 (do not run pip install).
set -u
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-50}
LIMIT=${LIMIT:-240}
BUDGET=${BUDGET:-3600}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
read -r -a TRAIN_EXTRA_ARGS <<< "${TRAIN_EXTRA:-}"
COMMON=(--preset full --data random --batch-size 512 --steps "$STEPS" --warmup 10 "${EXTRA_ARGS[@]}")
SPEED=(--preset speedrun --data random --steps "$STEPS" --warmup 10 "${EXTRA_ARGS[@]}")

step() {  # step NAME COMMAND...: run with a time limit, output to OUT/NAME.txt, status to OUT/status.txt
  local name=$1; shift
  if [ "$SECONDS" -ge "$BUDGET" ]; then
    echo "== $name: skipped, ${SECONDS} s spent of BUDGET=$BUDGET" | tee -a "$OUT/status.txt"
    return
  fi
  echo "== $name (at ${SECONDS} s): $*" | tee -a "$OUT/status.txt"
  timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "   exit $rc" | tee -a "$OUT/status.txt"
  tail -n 1 "$OUT/$name.txt" | cut -c1-300
  # a bench's (or the peer script's) last line is one JSON object: kept as NAME.json, the form chapter 12 reads
  # from benchmarks/results/ (train's JSON line stays in NAME.txt)
  if [ "$rc" = 0 ] && tail -n 1 "$OUT/$name.txt" | grep -q '^{.*"\(images_per_s\|rows\)"'; then
    tail -n 1 "$OUT/$name.txt" > "$OUT/$name.json"
  fi
}

{ nvidia-smi || echo "nvidia-smi not found"; } > "$OUT/nvidia-smi.txt" 2>&1
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  {
    if [ -n "${WHEELS:-}" ]; then $PY -m pip install --no-index --no-deps "$WHEELS"/*.whl; fi
    # offline, pip cannot fetch setuptools into an isolated build environment: build with the one installed
    $PY -m pip install --no-deps -e . || $PY -m pip install --no-deps --no-build-isolation -e .
  } > "$OUT/install.log" 2>&1 || echo "pip install failed (see install.log)" | tee -a "$OUT/status.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's sslbook, installed or not
$PY -m sslbook.benchmarks hardware > "$OUT/hardware.txt" 2>&1
cat "$OUT/hardware.txt"

for m in simclr byol moco_v2; do
  step "bench_$m" $PY -m sslbook bench "$m" "${COMMON[@]}"
done
if $PY -c "import lightly" > /dev/null 2>&1; then
  step peer_lightly $PY benchmarks/peer_lightly.py --method simclr byol moco_v2 --batch-size 512 --steps "$STEPS" --warmup 10 "${EXTRA_ARGS[@]}"
  PYTEST_BENCH=(-m pytest tests/test_bench.py -q)
else
  echo "lightly is not importable here (pip install -e '.[bench]' needs the package registry; WHEELS installs it without one): peer comparison not run" \
    | tee "$OUT/peer_lightly.txt" | tee -a "$OUT/status.txt"
  PYTEST_BENCH=(-m pytest tests/test_bench.py -q -k "not peer")
fi
step bench_simclr_speedrun $PY -m sslbook bench simclr "${SPEED[@]}"
step bench_simclr_loader $PY -m sslbook bench simclr "${COMMON[@]}" --data-on loader
# the rest compile (inductor compiles in the warm-up steps, or in the first epoch)
step bench_simclr_speedrun_compile $PY -m sslbook bench simclr "${SPEED[@]}" --compile
step train_simclr_speedrun_random $PY -m sslbook train simclr --preset speedrun --data random --epochs 5 --compile \
  --no-progress "${TRAIN_EXTRA_ARGS[@]}"
for m in simclr byol moco_v2; do
  step "bench_${m}_compile" $PY -m sslbook bench "$m" "${COMMON[@]}" --compile
done
step pytest_bench $PY "${PYTEST_BENCH[@]}"
echo "outputs in $OUT (${SECONDS} s)"

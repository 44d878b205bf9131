#!/usr/bin/env bash
# The ONE script to run on a lent GPU machine (one H100/H200, ~12 minutes, at most 10 minutes a command):
# trains DTC with the paper's protocol (16 labeled + 64 unlabeled LA cases, 6000 iterations), saves the
# model as fp16, times inference and training (bench/speed/speed.py GPU mode --train), evaluates on test.list
# when MedPy and the test cases are there, and copies everything small to $OUT.
#
# Prepare (on the CPU machine, from the project root; read ../shared/tools/device-pack.sh first):
#   bash ../shared/tools/device-pack.sh --wheels "SimpleITK monai"      # train.list cases + wheels
# send the printed part calls back to back, then ONE call (timeout_s ~590):
#   <PREAMBLE printed by device-pack.sh>; bash bench/gpu/device_run.sh
# Environment knobs: DATA (default /tmp/dtc-parts/la2018), ITER (6000), MODE (dtc), TRAIN_LIMIT_S (300; on timeout the trainer
# saves a checkpoint on SIGTERM and that one is shipped),
# SPEED_LIMIT_S (200), SKIP_SPEED=1 skips step 3, SEG=1 also trains supervised-only if time is left (rarely fits in one call).
# Back here: reassemble the model (cat model_fp16.pt.part-* > model.pt) and evaluate it on the CPU:
#   python bench/studies/reproduce_la.py --eval-only model.pt --device cpu --json bench/results/results_dtc_eval.json
# $OUT receives at most 8 files of <= 16 MiB: model_fp16.pt.part-00/01 (split -b 15M) and results.tar.gz.
set -u
cd "$(dirname "$0")/../.."  # the repository root
DATA=${DATA:-/tmp/dtc-parts/la2018}
ITER=${ITER:-6000}
MODE=${MODE:-dtc}
OUT=${OUT:-$(pwd)/out}
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-300}
SPEED_LIMIT_S=${SPEED_LIMIT_S:-200}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}  # e.g. EXTRA=--tiny DEVICE=cpu: the CPU smoke run of this script
RES=$(mktemp -d)
RUN=$(mktemp -d /tmp/dtc-device-run.XXXX)
mkdir -p "$OUT" "$RUN"
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$RES/device_run.log"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$RES/device_run.log" 2>&1 || true
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), sys.version)" 2>&1 | tee -a "$RES/device_run.log"

evalflag=--no-eval
if python3 -c "import medpy" 2>/dev/null && [ -f "$DATA/$(head -1 "$DATA/test.list")/image.nrrd" ]; then evalflag=""; fi

log "1. train $MODE, $ITER iterations (limit ${TRAIN_LIMIT_S}s)"
timeout "$TRAIN_LIMIT_S" python3 bench/studies/reproduce_la.py --data "$DATA" --mode "$MODE" --iterations "$ITER" \
  --device "$DEVICE" --workers 6 --out "$RUN" $evalflag $EXTRA --json "$RES/reproduce_$MODE.json" \
  --markdown "$RES/reproduce_$MODE.md" > "$RES/reproduce_$MODE.out" 2>&1
log "   exit $? ; $(tail -3 "$RES/reproduce_$MODE.out" | tr '\n' ' ')"
cp "$RUN/run_$MODE/log.jsonl" "$RES/log_$MODE.jsonl" 2>/dev/null || true
cp "$RUN/run_$MODE/curves.png" "$RES/curves_$MODE.png" 2>/dev/null || true

log "2. fp16 model"
python3 bench/shipping/ship_fp16.py "$RUN/run_$MODE" "$OUT/model_fp16.pt" 2>&1 | tee -a "$RES/device_run.log"
( cd "$OUT" && split -b 15M -d model_fp16.pt model_fp16.pt.part- && rm -f model_fp16.pt && sha256sum model_fp16.pt.part-* ) >> "$RES/device_run.log" 2>&1
tar -czf "$OUT/results.tar.gz" -C "$RES" . 2>/dev/null  # early copy in case the speed step runs out of time

log "3. speed (limit ${SPEED_LIMIT_S}s)"
[ "${SKIP_SPEED:-0}" = 1 ] || timeout "$SPEED_LIMIT_S" python3 bench/speed/speed.py --device "$DEVICE" --train --data "$DATA" $EXTRA --json "$RES/speed_gpu.json" \
  > "$RES/speed_gpu.md" 2> "$RES/speed_gpu.err"
log "   exit $?"

if [ "${SEG:-0}" = 1 ]; then
  left=$(( 560 - ($(date +%s) - t0) ))
  log "4. supervised-only, ${left}s left"
  [ "$left" -gt 120 ] && timeout "$left" python3 bench/studies/reproduce_la.py --data "$DATA" --mode seg --iterations "$ITER" \
    --device "$DEVICE" --workers 6 --out "$RUN" $evalflag $EXTRA --json "$RES/reproduce_seg.json" > "$RES/reproduce_seg.out" 2>&1
fi
log "done"
tar -czf "$OUT/results.tar.gz" -C "$RES" .
ls -la "$OUT"

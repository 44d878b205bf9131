#!/usr/bin/env bash
# ACDC on a lent GPU machine, in ONE call (at most 10 minutes a command): DTC (14 labeled + 56 unlabeled)
# and the labeled-only model (the same 14) train side by side on the one GPU for exactly $ITER iterations
# each (bench/studies/train_acdc.py --minutes 0: equal iterations, the paper's protocol; both with the same
# schedule fitted to $ITER), with nnU-Net's augmentations and the thick-slice network. The device has no
# MedPy, so the models come back as fp16 with their result JSONs and are scored here on the CPU.
#
# Prepare (on the CPU machine, from the project root; read ../shared/tools/device-pack.sh first):
#   bash ../shared/tools/device-pack.sh --no-data                  # the SimpleITK wheel, one part
#   grep -qx '/.device-acdc/' .git/info/exclude || echo '/.device-acdc/' >> .git/info/exclude
#   rm -rf .device-acdc && cp -r ../shared/data/acdc .device-acdc  # 34 MB: carried with the last call
# send the printed part call, then ONE call (carry [".device-acdc"], timeout_s ~590):
#   <PREAMBLE printed by device-pack.sh>; bash bench/gpu/device_acdc.sh
# Environment knobs: DATA (.device-acdc), ITER (6000), BASE (16 base filters, the paper's), DEVICE (cuda),
# TRAIN_LIMIT_S (480: a mode still training then is stopped; its newest checkpoint ships without a result,
# and its log gives the seconds per iteration to choose an ITER that fits), WORKERS (6 loader processes per
# mode), EXTRA (e.g. EXTRA=--tiny DEVICE=cpu: the CPU smoke run of this script).
# $OUT receives acdc_<mode>.pt.part-NN (split -b 15M), acdc_<mode>.json and results.tar.gz (logs). Back here:
#   cat acdc_dtc.pt.part-* > acdc_dtc.pt; cat acdc_seg.pt.part-* > acdc_seg.pt
#   python bench/studies/train_acdc.py --data ../shared/data/acdc --assess acdc_dtc.json   # and acdc_seg.json
#   python bench/studies/train_acdc.py --table acdc_dtc.json acdc_seg.json                 # + the paired comparison
set -u
cd "$(dirname "$0")/../.."  # the repository root
DATA=${DATA:-.device-acdc}
ITER=${ITER:-6000}
BASE=${BASE:-16}
DEVICE=${DEVICE:-cuda}
TRAIN_LIMIT_S=${TRAIN_LIMIT_S:-480}
WORKERS=${WORKERS:-6}
EXTRA=${EXTRA:-}
OUT=${OUT:-$(pwd)/out}
RES=$(mktemp -d)
RUN=$(mktemp -d /tmp/dtc-acdc.XXXX)
mkdir -p "$OUT"
t0=$(date +%s)
log() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$RES/device_acdc.log"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$RES/device_acdc.log" 2>&1 || true
[ -f "$DATA/train.list" ] || { log "no ACDC at $DATA (train.list missing): see the Prepare lines at the top"; exit 2; }

log "1. dtc and seg side by side, $ITER iterations each (limit ${TRAIN_LIMIT_S}s)"
pids=""
for mode in dtc seg; do
  # shellcheck disable=SC2086  # EXTRA is a list of options
  timeout "$TRAIN_LIMIT_S" python3 bench/studies/train_acdc.py --data "$DATA" --out "$RUN/$mode" --mode $mode \
    --minutes 0 --iterations "$ITER" --base-filters "$BASE" --spacing 1.5 1.5 1 --patch 128 128 8 \
    --pools 4 4 3 --nnunet-augment --device "$DEVICE" --workers "$WORKERS" --no-assess $EXTRA \
    --json "$RUN/acdc_$mode.json" > "$RES/acdc_$mode.out" 2>&1 &
  pids="$pids $mode:$!"
done
for job in $pids; do
  wait "${job#*:}"; rc=$?
  log "   ${job%%:*} ended: exit $rc$([ $rc = 124 ] && echo ', stopped at the limit: its newest checkpoint ships')"
done

log "2. fp16 models"
for mode in dtc seg; do
  cp "$RUN/$mode/run_$mode/log.jsonl" "$RES/log_$mode.jsonl" 2>/dev/null || true
  result=""; [ -f "$RUN/acdc_$mode.json" ] && result="--result $RUN/acdc_$mode.json"
  # shellcheck disable=SC2086
  python3 bench/shipping/ship_fp16.py "$RUN/$mode/run_$mode" "$OUT/acdc_$mode.pt" $result 2>&1 | tee -a "$RES/device_acdc.log"
  [ -f "$OUT/acdc_$mode.pt" ] && ( cd "$OUT" && split -b 15M -d "acdc_$mode.pt" "acdc_$mode.pt.part-" \
    && rm -f "acdc_$mode.pt" && sha256sum acdc_"$mode".pt.part-* ) >> "$RES/device_acdc.log" 2>&1
  log "   $mode: $(tail -1 "$RES/acdc_$mode.out")"
done
tar -czf "$OUT/results.tar.gz" -C "$RES" .
log "done"

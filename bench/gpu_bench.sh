#!/bin/bash
# The GPU benchmark, in one call on the GPU host (issue 5): build, check,
# measure, compare with PyTorch on the same machine, print a table.
#   bench/gpu_bench.sh            (after copying the checkout and .gpu-debs/)
# 1. builds flowrun with CUDA (scripts/gpu/build.sh, i.e. scripts/torch2.sh,
#    as every CI run does on the CPU) and runs the device tests (Gpu.*);
# 2. correctness: the same 5 batches (no shuffle, no augmentation, seeded
#    initial weights) trained on the CPU (fp32) and on the GPU (fp32, then
#    bf16): the epoch's mean loss must agree within 1e-3 (fp32) and 3e-2
#    (bf16, relative);
# 3. makes a 160 px JPEG ImageFolder (bench/make_imagefolder.py) and times
#    flowrun end to end from the files: (a) full fine-tune, (b) frozen
#    backbone, (c) evaluation;
# 4. runs ../shared/gpu/reference.py (PyTorch's synthetic-input ceiling and
#    its own DataLoader) in the same call;
# 5. prints images/s, the ratio to PyTorch and how long the train stage
#    waited for input (its share of the flow's time).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/flowrun-gpu-bench}
mkdir -p "$out"
build=${BUILD_DIR:-/tmp/flowrun-gpu}
env_line=$(BUILD_DIR="$build" scripts/gpu/build.sh | tail -1)
eval "$env_line"
flowrun="$build/flowrun"
threads=$(nproc)
"$flowrun" --version
# The device tests the CPU machines skip ("no CUDA device") run here.
"$build/tests/model_tests" --gtest_filter='Build.*:Gpu.*' --gtest_brief=1 || echo "gpu_bench: device tests FAILED" >&2

python3 bench/make_imagefolder.py "$out/check" --classes 10 --per-class 16 >/dev/null
python3 bench/make_imagefolder.py "$out/data" --classes 10 --per-class ${PER_CLASS:-1300} >/dev/null

check() {  # device precision -> mean loss of the epoch
  "$flowrun" bench/gpu_train.graph --threads "$threads" --set source.root="$out/check" --set source.sampler="" \
    --set augment.random_crop.padding=0 --set augment.hflip.p=0 --set batch.size=32 --set run.epochs=1 \
    --set model.device="$1" --set model.precision="$2" --set upload.device="$1" \
    --summary-json "$out/check-$1-$2.json" >/dev/null 2>"$out/check-$1-$2.log"
  python3 -c "import json;print(json.load(open('$out/check-$1-$2.json'))['train_loss'])"
}
cpu=$(check cpu fp32); gpu32=$(check cuda fp32); gpu16=$(check cuda bf16)
python3 - "$cpu" "$gpu32" "$gpu16" <<'PY'
import sys
cpu, g32, g16 = map(float, sys.argv[1:])
ok32, ok16 = abs(g32 - cpu) <= 1e-3 * max(1, abs(cpu)), abs(g16 - cpu) <= 3e-2 * max(1, abs(cpu))
print(f"correctness: loss cpu fp32 {cpu:.5f}  gpu fp32 {g32:.5f} ({'ok' if ok32 else 'MISMATCH'})  gpu bf16 {g16:.5f} ({'ok' if ok16 else 'MISMATCH'})")
sys.exit(0 if ok32 and ok16 else 1)
PY

run() {  # name graph extra... -> $out/name.json
  local name=$1 graph=$2; shift 2
  "$flowrun" "$graph" --threads "$threads" --set source.root="$out/data" "$@" --summary-json "$out/$name.json" \
    > "$out/$name.log" 2>&1
}
run full bench/gpu_train.graph
run frozen bench/gpu_train.graph --set freezer.mode=backbone
run eval bench/gpu_eval.graph
python3 ../shared/gpu/reference.py > "$out/reference.log" 2>&1 || true

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
ref = {}
for line in open(f"{out}/reference.log"):
    if ":" in line:
        k, v = line.split(":", 1); ref[k.strip()] = v.strip()
def figure(name, stage):
    s = json.load(open(f"{out}/{name}.json"))
    st = s["stages"][stage]
    busy_wait = st["busy_s"] + st["wait_input_s"]
    return s.get("images_per_s", 0), st["wait_input_s"] / busy_wait if busy_wait else 0, s
print(f"{'workload':34s} {'flowrun img/s':>14s} {'waits for data':>15s}   PyTorch reference")
for name, stage, label in [("full", "train", "full fine-tune 160px bf16"), ("frozen", "train", "frozen backbone 160px bf16"),
                           ("eval", "evaluate", "evaluation 160px bf16")]:
    ips, wait, s = figure(name, stage)
    print(f"{label:34s} {ips:14,.0f} {100*wait:14.1f}%")
print("PyTorch (reference.py, same machine):")
for k, v in ref.items(): print(f"  {k}: {v}")
PY

#!/usr/bin/env bash
# The one prepared GPU check. Two halves:
#   scripts/gpu-check.sh build    on the CPU machine: builds the test binaries and the cuattn CLI
#                                 with nvcc (CUDA build required), and the tuning variants (below,
#                                 each checked on the emulator), strips them and stages them with
#                                 this script in the git-ignored .gpu/ folder.
#   .gpu/gpu-check.sh device      on the GPU machine (no Rust there), results under $OUT: runs
#                                 the GPU tests, `cuattn info`, `cuattn check --device gpu` (also
#                                 on the compute_80 PTX), `cuattn bench --family prefill`, the
#                                 PyTorch anchors (bench_anchors.py), `cuattn bench --family
#                                 decode` and its anchors (bench_anchors.py --family decode: SDPA
#                                 over the gathered pages and over contiguous KV, FlexAttention
#                                 within its budget), `cuattn bench --family sparse` and its
#                                 anchors (bench_anchors.py --family sparse: FlexAttention with
#                                 the block masks cuattn wrote, SDPA-flash on the dense rows),
#                                 `cuattn bench --family linear` (causal linear attention against
#                                 the flash kernel, 1k to 64k tokens, with its fits), `cuattn
#                                 approx-report` (timed), Nsight Compute at hd128 and hd256, both
#                                 flash tile tables forced, a softcapped run and the tuning
#                                 variants (checked, then timed), and ends with short tables
#                                 (summary.txt and the results, written to $OUT as each step
#                                 ends). Every step keeps to
#                                 GPU_CHECK_BUDGET_S (480 s by default, below), the essential ones
#                                 (tests, checks, the benchmark, the anchors) first, so that the
#                                 run ends with its tables and log archive: give the device call a
#                                 timeout of about 540 s, which leaves a 15-minute device budget
#                                 room for a shorter rerun (GPU_CHECK_BUDGET_S=200). The run of
#                                 2026-11-28 took 102 s, with fewer steps.
set -euo pipefail

# Test binaries that exercise kernels on every device present (the GPU among them): the attention
# kernels, the primitives, the C API, the paged KV cache and paged attention over it (decode,
# split-KV, cascade), streams and CUDA graphs, the emulator's own checks, the fuzzer, block-sparse
# attention, linear attention (chunked causal, the state, FAVOR+) and low-rank (Linformer)
# attention.
GPU_TESTS=(attention_flash flash_head_dim_features attention_mma_simple attention_naive primitives
  capi kv_cache paged_attention emulator streams flash_fuzz block_sparse linear_attention
  lowrank_attention engine_api)
# Tuning variants (build.rs's CUATTN_FLASH_TUNE:
# <tile>:<m tiles>,<key tile>,<stages>[,<warps>[,<schedule>[,<fma exp2>[,<paired>]]]], schedule 1
# ping-pong, 2 pipelined; fma exp2 the quarters of the scores whose exp2 runs on the FMA pipe;
# paired 1 warps in pairs splitting keys and head dim), each built
# here in a binary with only that head-dim tile, checked on the emulator here, and timed on the
# GPU next to the table's row on the shapes of its head dim. Set GPU_CHECK_TUNE to a
# space-separated list to replace them, or to "" for none. The default: rows not timed yet
# (BENCHMARKS.md has those that were): FlashAttention-2's hd128 shape (four warps, 128x64, K and V
# in turns), its A100 hd256 shape (eight warps, 128x64, in turns), the ping-pong schedule on the
# wide hd128 and hd256 rows (next to those rows: the wide table forced; at hd128 it spills 12
# bytes, one load a tile, where the 173fc33 kernel spilled 136), the pipelined schedule at
# hd64 (the table's row with it) and on the compact hd128 row, and a quarter of the exp2s on the
# FMA pipe on the hd64 row and the wide hd128 one (a quarter about balances the MUFU's 8 clocks a
# warp instruction against the polynomial's 11 issues). First, since hd256 is furthest behind
# SDPA-flash: paired warps at hd256 (32 rows a warp, K and V in turns in four warps, two CTAs an
# SM; and eight warps with two stages); last, the 64x32 two-stage hd256 row that ran at 288
# TFLOP/s at f525db3 and 225 at 173fc33 (BENCHMARKS.md's open question). The device half runs
# them in this order, as far as its budget goes.
DEFAULT_TUNE="256:2,64,1,4,0,0,1 256:2,64,2,8,0,0,1 128:2,64,1 256:1,64,1,8 128:2,64,2,8,1"
DEFAULT_TUNE+=" 256:1,64,2,8,1 64:2,64,3,4,2 128:2,32,3,4,2 64:2,64,3,4,0,1 128:2,64,2,8,0,1"
DEFAULT_TUNE+=" 256:1,32,2"
read -r -a TUNE_VARIANTS <<< "${GPU_CHECK_TUNE-$DEFAULT_TUNE}"
TUNE_TIMEOUT_S=40

# The table a tuning build's row replaced (build.rs), forced when it is checked and timed so that
# every shape runs the tuned row: the wide one, the compact one at tile 64 (its only table).
tuned_table() {
  if [ "$1" -gt 64 ]; then echo wide; else echo compact; fi
}
# Time limits of the benchmark steps, seconds. `cuattn bench` plans about 150 ms of timed runs per
# shape (48 shapes, at least 5 runs each); the anchors stop starting FlexAttention compilations
# after ANCHORS_BUDGET_S. Both rewrite their JSON after every row, so a step cut short still leaves
# what it measured.
BENCH_TIMEOUT_S=150
ANCHORS_BUDGET_S=${GPU_CHECK_FLEX_BUDGET_S:-60}
ANCHORS_TIMEOUT_S=170
# The decode benchmark: 48 shapes (3 over its 40 GiB KV budget, skipped) with split-KV auto and
# off, about 150 ms of timed runs each, after filling each shape's cache (up to 32 GiB); its
# anchors: SDPA on every shape, then FlexAttention compilations until DECODE_ANCHORS_BUDGET_S
# after the script started (cuattn's targets first).
DECODE_TIMEOUT_S=120
DECODE_ANCHORS_BUDGET_S=${GPU_CHECK_DECODE_FLEX_BUDGET_S:-75}
DECODE_ANCHORS_TIMEOUT_S=120
# The block-sparse benchmark: 18 rows at 16k tokens (the dense flash kernel a shape, then block
# masks of density 0.05 to 1), about 150 ms of timed runs each after its inputs are drawn, each
# row's output copied back and checked; it writes its block masks and their manifest first, into
# a folder its anchors read: SDPA-flash on the dense rows, then FlexAttention with the same block
# masks, one compilation per shape, rule and block size (four), the target's first, until
# SPARSE_ANCHORS_BUDGET_S after the script started.
SPARSE_TIMEOUT_S=90
SPARSE_ANCHORS_BUDGET_S=${GPU_CHECK_SPARSE_FLEX_BUDGET_S:-100}
SPARSE_ANCHORS_TIMEOUT_S=150
# The linear attention benchmark: 7 lengths (1k to 64k tokens, 16/16 heads, hd128, causal), the
# flash kernel then linear attention at each, about 150 ms of timed runs each (flash at 64k takes
# some 40 ms a run), each row's output copied back and checked.
LINEAR_TIMEOUT_S=60
# The approximation report on its GPU defaults (synthetic inputs at 1k, 4k and 16k tokens, 8 heads,
# hd64; each method timed for about 30 ms after an untimed run; the inputs drawn and the exact
# rows checked against f64 on the host, a few seconds).
APPROX_TIMEOUT_S=60
# The device half's time budget, seconds: each step gets its own limit or what is left of the
# budget, whichever is less, and none starts with under 15 s left (a tuning row's check only with
# its whole minute), so that the run ends with its tables and its log archive inside one device
# call (at most 600 s) rather than being cut off before them. A benchmark the budget cut short
# keeps the rows it wrote, and is no failure. GPU_CHECK_BUDGET_S overrides it.
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}

build() {
  local root
  root=$(cd "$(dirname "$0")/.." && pwd)
  cd "$root"
  NVCC=$(bash scripts/install-cuda-toolchain.sh | tail -n 1)
  export NVCC CUATTN_REQUIRE_CUDA=1
  rm -rf .gpu && mkdir -p .gpu/bin
  cargo build --release --bin cuattn
  cp target/release/cuattn .gpu/bin/
  local json
  json=$(cargo test --release --no-run --message-format=json 2>/dev/null)
  for t in "${GPU_TESTS[@]}"; do
    local exe
    exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])' "$t" | tail -n 1)
    [ -n "$exe" ] || { echo "test binary $t not found" >&2; exit 1; }
    cp "$exe" ".gpu/bin/$t"
  done
  strip .gpu/bin/*
  # Gzipped, as the tuning variants below: the working tree that travels is limited to 64 MiB.
  gzip -9 .gpu/bin/*
  # Tuning variants, gzipped too, and their names in the order the device half runs them.
  mkdir -p .gpu/tune
  : > .gpu/tune/order
  for v in "${TUNE_VARIANTS[@]}"; do
    local name="hd${v/:/-}" tile=${v%%:*}
    name=${name//,/-}
    CUATTN_FLASH_TUNE=$v CARGO_TARGET_DIR=target/tune cargo build --release --bin cuattn \
      --no-default-features --features "hd$tile,cli"
    target/tune/release/cuattn check --device emu --flash-tiles "$(tuned_table "$tile")" \
      > "target/tune/$name.check.txt" 2>&1 || {
      echo "tuning variant $v fails on the emulator:" >&2
      tail -n 5 "target/tune/$name.check.txt" >&2
      exit 1
    }
    strip -o ".gpu/tune/$name" target/tune/release/cuattn
    gzip -9 ".gpu/tune/$name"
    echo "$name" >> .gpu/tune/order
  done
  cp scripts/gpu-check.sh scripts/bench_anchors.py .gpu/
  git rev-parse --short HEAD > .gpu/commit 2>/dev/null || echo unknown > .gpu/commit
  du -sh .gpu
}

device() {
  local here final out status=0 started=$SECONDS
  here=$(cd "$(dirname "$0")" && pwd)
  # Prints the seconds step $2 may take: its own limit $1, or what is left of BUDGET_S if less;
  # 0, with a line in the summary, when less than $3 seconds (15 unless given) are left.
  limit() {
    local left=$((BUDGET_S - (SECONDS - started)))
    if [ "$left" -lt "${3:-15}" ]; then
      echo "$2: skipped (${left} s left of the ${BUDGET_S} s budget)" >> "$summary"
      echo 0
    else
      echo $(($1 < left ? $1 : left))
    fi
  }
  # A benchmark as a column of the tuned table: runs the command after $1 (the column's name)
  # and $2 (its own time limit) with --json $out/$1.json. The rows it timed join the table when
  # it succeeds, and also when the budget cut it short (not a failure) or it failed part way.
  bench_column() {
    local name=$1 own=$2 lim rc=0
    shift 2
    lim=$(limit "$own" "$name")
    [ "$lim" -gt 0 ] || return 0
    CUATTN_COMMIT="$commit" timeout "$lim" "$@" --json "$out/$name.json" > "$out/$name.txt" 2>&1 ||
      rc=$?
    if [ "$rc" -eq 124 ] && [ "$lim" -lt "$own" ]; then
      echo "$name: cut short by the budget after ${lim} s" >> "$summary"
    elif [ "$rc" -ne 0 ]; then
      echo "$name: FAILED ($(tail -n 1 "$out/$name.txt"))" >> "$summary"
      status=1
    fi
    if [ -s "$out/$name.json" ]; then
      tuned+=(--tuned "$name=$out/$name.json")
    fi
  }
  # At most 8 files come back from $OUT: logs go to a scratch folder and return as one archive.
  final=${OUT:-$here/out}
  out=$(mktemp -d)
  mkdir -p "$final"
  # The binaries travel gzipped (build): unpacked into a scratch folder.
  local bin
  bin=$(mktemp -d)
  for packed in "$here"/bin/*.gz; do
    gzip -dc "$packed" > "$bin/$(basename "$packed" .gz)"
  done
  chmod +x "$bin"/*
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
  "$bin/cuattn" info > "$out/info.txt" 2>&1 || status=1
  # The summary goes straight to $OUT, so that a run cut short still returns what it got to.
  local summary="$final/summary.txt"
  echo "commit $(cat "$here/commit")  $(tail -n 1 "$out/gpu.txt")" > "$summary"
  local lim
  for t in "${GPU_TESTS[@]}"; do
    lim=$(limit 120 "test $t")
    [ "$lim" -gt 0 ] || continue
    if timeout "$lim" "$bin/$t" --nocapture --test-threads=1 > "$out/test-$t.log" 2>&1; then
      echo "test $t: ok  ($(grep -E '^test result' "$out/test-$t.log" | tail -n 1))" >> "$summary"
    else
      echo "test $t: FAILED (see test-$t.log)" >> "$summary"
      status=1
    fi
  done
  lim=$(limit 120 check)
  if [ "$lim" -eq 0 ]; then
    :
  elif timeout "$lim" "$bin/cuattn" check --device gpu > "$out/check.txt" 2>&1; then
    echo "check: $(tail -n 1 "$out/check.txt")" >> "$summary"
  else
    echo "check: FAILED ($(tail -n 1 "$out/check.txt"))" >> "$summary"
    status=1
  fi
  # Results go to $OUT as each step ends, so that a run cut short returns what it got to.
  cp "$out/check.txt" "$final/" 2>/dev/null || true
  # The same on the compute_80 PTX, which the driver JIT-compiles here as it does on GPUs newer
  # than sm_90: flash must see that its wide kernels (sm_90a code only, a trap in that PTX) are
  # out, and run compact tiles.
  lim=$(limit 150 "check on the compute_80 PTX")
  if [ "$lim" -eq 0 ]; then
    :
  elif CUDA_FORCE_PTX_JIT=1 timeout "$lim" "$bin/cuattn" check --device gpu \
      > "$out/check-jit.txt" 2>&1; then
    echo "check on the compute_80 PTX: $(tail -n 1 "$out/check-jit.txt")" >> "$summary"
  else
    echo "check on the compute_80 PTX: FAILED ($(tail -n 1 "$out/check-jit.txt"))" >> "$summary"
    status=1
  fi
  CUDA_FORCE_PTX_JIT=1 timeout 60 "$bin/cuattn" info 2>&1 | grep -m 1 'flash tile tables' |
    sed 's/^ */on the compute_80 PTX: /' >> "$summary" || true
  local commit
  commit=$(cat "$here/commit")
  lim=$(limit "$BENCH_TIMEOUT_S" bench)
  if [ "$lim" -eq 0 ]; then
    :
  elif CUATTN_COMMIT="$commit" timeout "$lim" "$bin/cuattn" bench \
      --family prefill --device gpu --json "$out/bench.json" > "$out/bench.txt" 2>&1; then
    echo "bench: ok (bench.txt, bench.json)" >> "$summary"
  else
    echo "bench: FAILED ($(tail -n 1 "$out/bench.txt"))" >> "$summary"
    status=1
  fi
  cp "$out/bench.json" "$final/" 2>/dev/null || true
  # The anchors are PyTorch's kernels, not cuattn's: their failure is reported, not failed on.
  lim=$(limit "$ANCHORS_TIMEOUT_S" anchors)
  if [ "$lim" -eq 0 ]; then
    :
  elif CUATTN_COMMIT="$commit" timeout "$lim" python3 "$here/bench_anchors.py" \
      --json "$out/anchors.json" --budget-s "$ANCHORS_BUDGET_S" > "$out/anchors.txt" 2>&1; then
    echo "anchors: ok (anchors.txt, anchors.json)" >> "$summary"
  else
    echo "anchors: FAILED ($(tail -n 1 "$out/anchors.txt"))" >> "$summary"
  fi
  cp "$out/anchors.json" "$final/" 2>/dev/null || true
  # The decode benchmark, then its anchors on the same shapes. A run the budget cut short keeps
  # the rows it wrote, and is no failure.
  local rc=0
  lim=$(limit "$DECODE_TIMEOUT_S" "bench decode")
  if [ "$lim" -gt 0 ]; then
    CUATTN_COMMIT="$commit" timeout "$lim" "$bin/cuattn" bench --family decode --device gpu \
      --json "$out/bench-decode.json" > "$out/bench-decode.txt" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
      echo "bench decode: ok (bench-decode.txt, bench-decode.json)" >> "$summary"
    elif [ "$rc" -eq 124 ] && [ "$lim" -lt "$DECODE_TIMEOUT_S" ]; then
      echo "bench decode: cut short by the budget after ${lim} s" >> "$summary"
    else
      echo "bench decode: FAILED ($(tail -n 1 "$out/bench-decode.txt"))" >> "$summary"
      status=1
    fi
  fi
  cp "$out/bench-decode.json" "$final/" 2>/dev/null || true
  lim=$(limit "$DECODE_ANCHORS_TIMEOUT_S" "anchors decode")
  if [ "$lim" -eq 0 ]; then
    :
  elif CUATTN_COMMIT="$commit" timeout "$lim" python3 "$here/bench_anchors.py" --family decode \
      --json "$out/anchors-decode.json" --budget-s "$DECODE_ANCHORS_BUDGET_S" \
      > "$out/anchors-decode.txt" 2>&1; then
    echo "anchors decode: ok (anchors-decode.txt, anchors-decode.json)" >> "$summary"
  else
    echo "anchors decode: FAILED ($(tail -n 1 "$out/anchors-decode.txt"))" >> "$summary"
  fi
  cp "$out/anchors-decode.json" "$final/" 2>/dev/null || true
  # The block-sparse benchmark, then its anchors on the masks it wrote (the budget may cut either
  # short: the rows written stay, and that is no failure). Its anchors' JSON stays in logs.tgz
  # with the masks: $OUT takes 8 files, and the summary's sparse table joins both reports.
  rc=0
  lim=$(limit "$SPARSE_TIMEOUT_S" "bench sparse")
  if [ "$lim" -gt 0 ]; then
    CUATTN_COMMIT="$commit" timeout "$lim" "$bin/cuattn" bench --family sparse --device gpu \
      --mask-dir "$out/masks" --json "$out/bench-sparse.json" > "$out/bench-sparse.txt" 2>&1 ||
      rc=$?
    if [ "$rc" -eq 0 ]; then
      echo "bench sparse: ok (bench-sparse.txt, bench-sparse.json)" >> "$summary"
    elif [ "$rc" -eq 124 ] && [ "$lim" -lt "$SPARSE_TIMEOUT_S" ]; then
      echo "bench sparse: cut short by the budget after ${lim} s" >> "$summary"
    else
      echo "bench sparse: FAILED ($(tail -n 1 "$out/bench-sparse.txt"))" >> "$summary"
      status=1
    fi
  fi
  cp "$out/bench-sparse.json" "$final/" 2>/dev/null || true
  if [ ! -s "$out/masks/masks.json" ]; then
    echo "anchors sparse: skipped (no block masks written)" >> "$summary"
  else
    lim=$(limit "$SPARSE_ANCHORS_TIMEOUT_S" "anchors sparse")
    if [ "$lim" -eq 0 ]; then
      :
    elif CUATTN_COMMIT="$commit" timeout "$lim" python3 "$here/bench_anchors.py" --family sparse \
        --mask-dir "$out/masks" --json "$out/anchors-sparse.json" \
        --budget-s "$SPARSE_ANCHORS_BUDGET_S" > "$out/anchors-sparse.txt" 2>&1; then
      echo "anchors sparse: ok (anchors-sparse.txt, anchors-sparse.json in logs.tgz)" >> "$summary"
    else
      echo "anchors sparse: FAILED ($(tail -n 1 "$out/anchors-sparse.txt"))" >> "$summary"
    fi
  fi
  # The linear attention benchmark (a run the budget cut short keeps the rows it wrote, and is no
  # failure). Its JSON stays in logs.tgz ($OUT takes 8 files); its rows, fits and verdicts go to
  # the summary.
  rc=0
  lim=$(limit "$LINEAR_TIMEOUT_S" "bench linear")
  if [ "$lim" -gt 0 ]; then
    CUATTN_COMMIT="$commit" timeout "$lim" "$bin/cuattn" bench --family linear --device gpu \
      --json "$out/bench-linear.json" > "$out/bench-linear.txt" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
      echo "bench linear: ok (bench-linear.txt, bench-linear.json in logs.tgz)" >> "$summary"
    elif [ "$rc" -eq 124 ] && [ "$lim" -lt "$LINEAR_TIMEOUT_S" ]; then
      echo "bench linear: cut short by the budget after ${lim} s" >> "$summary"
    else
      echo "bench linear: FAILED ($(tail -n 1 "$out/bench-linear.txt"))" >> "$summary"
      status=1
    fi
  fi
  # The approximation report, its table into the summary, its JSON and plot into logs.tgz.
  lim=$(limit "$APPROX_TIMEOUT_S" "approx-report")
  if [ "$lim" -eq 0 ]; then
    :
  elif timeout "$lim" "$bin/cuattn" approx-report --device gpu --json "$out/approx.json" \
      --plot "$out/approx.png" > "$out/approx.txt" 2> "$out/approx-progress.txt"; then
    echo "approx-report: ok (approx.txt, approx.json, approx.png in logs.tgz)" >> "$summary"
  else
    echo "approx-report: FAILED ($(tail -n 1 "$out/approx-progress.txt"))" >> "$summary"
    status=1
  fi
  # Hardware counters of one launch of the default kernel at hd128 and at hd256 (wide tiles), and
  # of the compact hd256 row (K and V in turns), 2k queries unmasked (pipes, stalls and the
  # instructions they sample, shared-memory wavefronts and bank conflicts), where Nsight Compute
  # is there; clocks left alone.
  if command -v ncu > /dev/null; then
    for run in 128:auto 256:auto 256:compact; do
      local hd=${run%%:*} tiles=${run#*:}
      local name="ncu-hd$hd-$tiles"
      lim=$(limit 90 "$name")
      [ "$lim" -gt 0 ] || continue
      timeout "$lim" ncu --clock-control none --kernel-name regex:flash_fwd_kernel \
        --launch-skip 1 --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
        --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis_Tables \
        --section Occupancy --section SourceCounters --print-details all \
        "$bin/cuattn" bench --family prefill --device gpu --quick --head-dim "$hd" \
        --flash-tiles "$tiles" > "$out/$name.txt" 2>&1 &&
        echo "$name: ok ($name.txt in logs.tgz)" >> "$summary" ||
        echo "$name: FAILED ($(tail -n 1 "$out/$name.txt"))" >> "$summary"
    done
  fi
  # Both tile tables forced, as columns next to the default (auto) ones; hd64 has one table.
  local tuned=()
  for tiles in compact wide; do
    bench_column "$tiles" "$BENCH_TIMEOUT_S" "$bin/cuattn" bench --family prefill --device gpu \
      --head-dim 128,256 --flash-tiles "$tiles"
  done
  # A soft cap of 50 (Gemma 2's) on the hd128 and hd256 shapes, as a column next to the uncapped
  # default: what the tanh of every score costs.
  bench_column softcap50 "$BENCH_TIMEOUT_S" "$bin/cuattn" bench --family prefill --device gpu \
    --head-dim 128,256 --softcap 50
  # Tuning variants: each on the shapes of its head dim, as a column next to the table's row.
  # (Read on descriptor 3, since the steps in the loop read standard input.)
  local name exe packed
  while read -r name <&3; do
    packed="$here/tune/$name.gz"
    [ -e "$packed" ] || continue
    local tile=${name#hd}
    tile=${tile%%-*}
    # Checked on this GPU before it is timed: a tuning row is new code here too (the ping-pong
    # rows' named barriers, the pipelined rows' schedule and fma_exp2 run in no table). Only with
    # the check's whole time left: one cut short would say nothing.
    lim=$(limit 60 "tune $name" 60)
    [ "$lim" -gt 0 ] || continue
    exe="$out/$name"
    gzip -dc "$packed" > "$exe" && chmod +x "$exe"
    if timeout "$lim" "$exe" check --device gpu --flash-tiles "$(tuned_table "$tile")" \
        > "$out/tune-$name.check.txt" 2>&1; then
      echo "tune $name check: $(tail -n 1 "$out/tune-$name.check.txt")" >> "$summary"
      bench_column "$name" "$TUNE_TIMEOUT_S" "$exe" bench --family prefill --device gpu \
        --head-dim "$tile" --flash-tiles "$(tuned_table "$tile")"
    else
      echo "tune $name check: FAILED ($(tail -n 1 "$out/tune-$name.check.txt"))" >> "$summary"
      status=1
    fi
    rm -f "$exe"
  done 3< <(cat "$here/tune/order" 2>/dev/null)
  echo >> "$summary"
  python3 "$here/bench_anchors.py" --table "$out/bench.json" "$out/anchors.json" >> "$summary" \
    2>&1 || true
  if [ -s "$out/bench-decode.json" ]; then
    echo >> "$summary"
    python3 "$here/bench_anchors.py" --table "$out/bench-decode.json" "$out/anchors-decode.json" \
      >> "$summary" 2>&1 || true
  fi
  if [ -s "$out/bench-sparse.json" ]; then
    echo >> "$summary"
    python3 "$here/bench_anchors.py" --table "$out/bench-sparse.json" "$out/anchors-sparse.json" \
      >> "$summary" 2>&1 || true
  fi
  if [ -s "$out/bench-linear.txt" ]; then
    echo >> "$summary"
    grep -E '^(bench linear|kernel |flash |linear_elu1 |fit: |target: )' "$out/bench-linear.txt" \
      >> "$summary" || true
  fi
  if [ -s "$out/approx.txt" ]; then
    echo >> "$summary"
    grep -v '^wrote ' "$out/approx.txt" >> "$summary" || true
  fi
  if [ ${#tuned[@]} -gt 0 ]; then
    echo >> "$summary"
    python3 "$here/bench_anchors.py" --table "$out/bench.json" "$out/anchors.json" "${tuned[@]}" \
      > "$out/tune.txt" 2>&1 || true
    cat "$out/tune.txt" >> "$summary"
  fi
  cat "$summary"
  tar czf "$final/logs.tgz" -C "$out" .
  return $status
}

case "${1:-}" in
  build) build ;;
  device) device ;;
  *) echo "usage: $0 build|device" >&2; exit 2 ;;
esac

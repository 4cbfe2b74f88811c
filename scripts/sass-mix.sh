#!/usr/bin/env bash
# The static instruction mix of one CUDA translation unit's kernels, for judging a kernel change
# on a machine without a GPU: ptxas's registers and spills, then per kernel the instructions of its
# largest loop (the key loop of an attention kernel) by kind, and that loop's size per 128 HMMA.
# Static counts: every branch of the loop body is counted once, taken or not; not a profile.
# SASS_MIX_BLOCKS=1 also lists the loop's blocks (straight-line runs between branches and their
# targets) with their mixes, in address order, so that the path a tile takes (say the unmasked one
# without a rescale) can be added up, and so that one sees which instructions share a block (ptxas
# reorders only within one). CUATTN_FLASH_TUNE (build.rs's syntax) builds that tuning row.
#
#   scripts/sass-mix.sh csrc/kernels/flash_fwd_bf16_hd128.cu [sm_90a|sm_80]
#   SASS_MIX_BLOCKS=1 CUATTN_FLASH_TUNE=64:2,64,3,4,2 scripts/sass-mix.sh \
#     csrc/kernels/flash_fwd_bf16_hd64.cu
#
# Needs nvcc (scripts/install-cuda-toolchain.sh). On first use installs cuobjdump and nvdisasm from
# pinned PyPI wheels into the git-ignored .cuda/sass-tools.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:?usage: scripts/sass-mix.sh <file.cu> [sm_90a|sm_80]}
arch=${2:-sm_90a}
nvcc=$(bash "$root/scripts/install-cuda-toolchain.sh" 2>/dev/null | tail -n 1)

tools="$root/.cuda/sass-tools"
if [ ! -x "$tools/bin/cuobjdump" ] || [ ! -x "$tools/bin/nvdisasm" ]; then
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$tools/site" \
    nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37 >&2
  mkdir -p "$tools/bin"
  for tool in cuobjdump nvdisasm; do
    ln -sf "$(find "$tools/site" -name "$tool" -type f -path '*/bin/*' | head -n 1)" "$tools/bin/$tool"
  done
fi

# A tuning row as build.rs passes it:
# <tile>:<m tiles>,<key tile>,<stages>[,<warps>[,<schedule>[,<fma exp2>[,<paired>]]]].
tune=()
if [ -n "${CUATTN_FLASH_TUNE:-}" ]; then
  IFS=, read -r -a row <<< "${CUATTN_FLASH_TUNE#*:}"
  tune=(-DCUATTN_FLASH_TUNE_HD="${CUATTN_FLASH_TUNE%%:*}" -DCUATTN_FLASH_TUNE_MTILES="${row[0]}"
    -DCUATTN_FLASH_TUNE_BLOCKN="${row[1]}" -DCUATTN_FLASH_TUNE_STAGES="${row[2]}"
    -DCUATTN_FLASH_TUNE_WARPS="${row[3]:-4}" -DCUATTN_FLASH_TUNE_SCHEDULE="${row[4]:-0}"
    -DCUATTN_FLASH_TUNE_FMA_EXP2="${row[5]:-0}" -DCUATTN_FLASH_TUNE_PAIRED="${row[6]:-0}")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The flags of build.rs, every head-dim tile on.
"$nvcc" -std=c++17 -O3 -I"$root/csrc" -arch="$arch" -cubin -o "$work/k.cubin" \
  -DCUATTN_FLASH_HD64 -DCUATTN_FLASH_HD96 -DCUATTN_FLASH_HD128 -DCUATTN_FLASH_HD192 \
  -DCUATTN_FLASH_HD256 ${tune[@]+"${tune[@]}"} -Xptxas -v "$src" 2>&1 |
  grep -E 'Compiling entry|registers|spill' | sed -E 's/^ptxas info *: //' | c++filt
PATH="$tools/bin:$PATH" cuobjdump -sass "$work/k.cubin" > "$work/k.sass"

SASS_MIX_BLOCKS=${SASS_MIX_BLOCKS:-0} python3 - "$work/k.sass" <<'PY'
import collections, os, re, subprocess, sys

KINDS = ["HMMA", "LDSM", "LDGSTS", "BAR", "MUFU", "FFMA", "FMUL", "FADD", "FMNMX", "F2FP", "SHFL"]

functions = []  # (name, [(address, opcode, text)])
for line in open(sys.argv[1]):
    header = re.match(r"\s*Function : (\S+)", line)
    if header:
        functions.append((header.group(1), []))
        continue
    ins = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
    if ins and functions:
        text = re.sub(r"^@!?U?P\w+\s+", "", ins.group(2))  # drop the predicate
        functions[-1][1].append((int(ins.group(1), 16), text.split()[0].split(".")[0], text))

for mangled, code in functions:
    name = subprocess.run(["c++filt"], input=mangled, capture_output=True, text=True).stdout.strip()
    # A loop: a backward branch; the largest is the kernel's main loop.
    loops = []
    for address, op, text in code:
        target = re.search(r"0x([0-9a-f]+)", text)
        if op == "BRA" and target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    print(f"\n{name}\n  {len(code)} instructions")
    if not loops:
        continue
    lo, hi = max(loops, key=lambda l: l[1] - l[0])
    mix = collections.Counter(op for address, op, _ in code if lo <= address <= hi)
    total = sum(mix.values())
    line = f"  largest loop: {total} instructions"
    if mix["HMMA"]:
        line += f", {128 * total / mix['HMMA']:.0f} per 128 HMMA"
    print(line)
    print("  " + "  ".join(f"{k} {mix[k]}" for k in KINDS))
    others = [(op, n) for op, n in mix.most_common() if op not in KINDS][:8]
    print("  others: " + "  ".join(f"{op} {n}" for op, n in others))
    if os.environ["SASS_MIX_BLOCKS"] != "1":
        continue
    # The loop's blocks: a block ends at a branch or a barrier and starts at a branch target.
    body = [(address, op, text) for address, op, text in code if lo <= address <= hi]
    targets = {int(t.group(1), 16) for _, op, text in body if op == "BRA"
               for t in [re.search(r"0x([0-9a-f]+)", text)] if t}
    blocks, block = [], []
    for address, op, text in body:
        if address in targets and block:
            blocks.append(block)
            block = []
        block.append((address, op, text))
        if op in ("BRA", "BAR"):
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    print("  loop blocks (address, instructions, mix, last instruction):")
    for block in blocks:
        counts = collections.Counter(op for _, op, _ in block)
        top = " ".join(f"{op}:{n}" for op, n in counts.most_common(8))
        print(f"    {block[0][0]:#07x} {len(block):4d}  {top}  | {block[-1][2][:60]}")
PY

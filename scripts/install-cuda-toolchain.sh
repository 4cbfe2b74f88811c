#!/usr/bin/env bash
# Installs nvcc 13.0 from pinned PyPI wheels into the git-ignored .cuda/ and prints the nvcc path.
# Optional for users: without nvcc, cuattn builds its CPU emulator only. Idempotent.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix="$root/.cuda"
stamp="$prefix/.installed-13.0.88"

# Every wheel pinned: the nvcc wheel names its siblings without versions.
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
)

if [ ! -f "$stamp" ]; then
  python3 -m pip install --quiet --no-deps --disable-pip-version-check \
    --target "$prefix/site" "${wheels[@]}" >&2
  # The wheels put everything under site/nvidia/cu13; expose it as a plain toolkit root.
  cu="$prefix/site/nvidia/cu13"
  [ -d "$cu" ] || cu=$(dirname "$(dirname "$(find "$prefix/site" -name nvcc -type f -path '*/bin/*' | head -n 1)")")
  ln -sfn "$cu" "$prefix/toolkit"
  # nvcc.profile looks in lib64/; the wheels ship lib/.
  [ -e "$prefix/toolkit/lib64" ] || ln -s lib "$prefix/toolkit/lib64"
  touch "$stamp"
fi

nvcc="$prefix/toolkit/bin/nvcc"
"$nvcc" --version >&2
echo "$nvcc"

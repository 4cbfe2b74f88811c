#!/usr/bin/env python3
"""PyTorch anchors for `cuattn bench` (families prefill, decode and sparse): the same shapes, timed
the same way, with PyTorch's attention kernels, so cuattn's numbers sit next to known ones from the
same card and run.

Prefill backends: scaled_dot_product_attention restricted to the flash backend (FlashAttention-2
inside PyTorch) and to the cuDNN backend, and FlexAttention compiled with torch.compile (causal
through a block mask). TFLOP/s count 4 * head_dim flops per visible (query, key) pair, so causal
is about half of full.

Decode backends (one new token a sequence over a paged KV cache laid out as cuattn's: pools of
[num_pages, 16, kv_heads, head_dim], each sequence's pages drawn from a random permutation):
  sdpa_gather      gathers each sequence's K and V from the pages through the block table, then
                   SDPA over them; the gather is timed with it, as an engine without a paged
                   kernel would run it;
  sdpa_contiguous  SDPA alone over K and V already contiguous ([batch, kv_heads, context,
                   head_dim]): the best case of a dense kernel, no paging at all;
  flex             FlexAttention (its decode kernel for one query row) compiled with
                   torch.compile, over the same contiguous K and V.
SDPA may pick flash, memory-efficient or cuDNN, never the math fallback. Every decode row counts
GB/s as cuattn does: the KV bytes the step must read (batch * context * kv_heads * head_dim * 2 *
2) over the median time, whatever the path moved (the gather moves about three times as much).

Sparse backends, on the rows of `cuattn bench --family sparse --mask-dir DIR`, read from DIR (its
manifest masks.json and each row's block matrix, uint8 [batch or 1, heads or 1, nq, nk], before
the causal rule; cuattn's random masks come from Rust's StdRng, which PyTorch cannot redraw):
  sdpa_flash  SDPA's flash backend on the dense rows (cuattn's dense flash kernel's shapes);
  flex        FlexAttention compiled with torch.compile, with a BlockMask made from the very same
              blocks (BlockMask.from_kv_blocks): the blocks the causal rule leaves whole as full
              blocks, the ones it cuts as partial blocks under a causal mask_mod, the split
              checked against the full and partial counts cuattn wrote; 64 x 64 tiles for blocks
              under 128 (its tile must divide the block). One compilation per shape, rule and
              block size; cuattn's target row first.
Both count the effective TFLOP/s cuattn does: 4 * head_dim flops per visible (query, key) pair
of the row's mask (from the manifest) over the median time.

Timing as in cuattn: CUDA events around each run, the L2 flushed before it (a memset of max(2 x
L2, 256 MiB)), warm-up, the median of many runs. A backend that fails on a shape gets a row with
its error and the run goes on. FlexAttention compiles once per shape, so it runs last, most
relevant shapes first, within --budget-s; what the budget leaves out is recorded as skipped.

Usage: python3 bench_anchors.py [--family prefill|decode] --json anchors.json [--quick]
                                [--budget-s 150]
       python3 bench_anchors.py --family sparse --mask-dir DIR --json anchors.json [--budget-s 100]
       python3 bench_anchors.py --table bench.json anchors.json
The first two need a CUDA GPU and PyTorch (2.5 or newer for enable_gqa and FlexAttention); the
last prints cuattn's results (`cuattn bench --json`) next to the anchors: TFLOP/s per shape for
prefill, GB/s of KV read per shape for decode, time against the dense kernel and FlexAttention
per row for sparse (the family is read from the files).
"""

import argparse
import ast
import json
import os
import statistics
import sys
import time

TOKENS = 16 * 1024  # batch * seqlen, FlashAttention's benchmark convention
MODEL_DIM = 2048  # heads * head_dim of the MHA shapes
SEQLENS = [512, 1024, 2048, 4096, 8192, 16384]
HEAD_DIMS = [64, 128, 256]
GQA = (32, 8, 128)  # heads, kv_heads, head_dim
MIN_FLUSH_BYTES = 256 << 20
BACKENDS = ["sdpa_flash", "sdpa_cudnn", "flex"]

# The decode grid of `cuattn bench --family decode`, in its order (batch, then context, then head
# group), and its conventions.
DECODE_BATCHES = [1, 8, 64, 256]
DECODE_CONTEXTS = [1024, 8192, 64 * 1024]
DECODE_GROUPS = [(32, 32), (32, 8), (32, 4), (32, 1)]  # heads, kv_heads: group 1, 4, 8 and MQA
DECODE_HEAD_DIM = 128
PAGE_SIZE = 16
KV_BUDGET_BYTES = 40 << 30  # shapes with more KV are skipped, as in cuattn
FREE_MEMORY_SHARE = 0.85  # of the memory free when a shape starts, for its two copies of the KV
DECODE_BACKENDS = ["sdpa_gather", "sdpa_contiguous", "flex"]
# cuattn's targets: (batch, context, heads, kv_heads, least % of the copy with split-KV auto).
DECODE_TARGETS = [(64, 8192, 32, 8, 90.0), (1, 64 * 1024, 32, 8, 85.0)]
# The sparse rows are cuattn's, read from the manifest its --mask-dir wrote.
SPARSE_BACKENDS = ["sdpa_flash", "flex"]


def mha(seqlen, head_dim, causal):
    heads = MODEL_DIM // head_dim
    return dict(batch=max(TOKENS // seqlen, 1), seqlen=seqlen, heads=heads, kv_heads=heads,
                head_dim=head_dim, causal=causal)


def gqa(seqlen, causal):
    heads, kv_heads, head_dim = GQA
    return dict(batch=max(TOKENS // seqlen, 1), seqlen=seqlen, heads=heads, kv_heads=kv_heads,
                head_dim=head_dim, causal=causal)


def prefill_shapes():
    """The shapes of `cuattn bench --family prefill`, in its order."""
    shapes = [mha(s, d, c) for d in HEAD_DIMS for c in (False, True) for s in SEQLENS]
    shapes += [gqa(s, c) for c in (False, True) for s in SEQLENS]
    return shapes


def quick_shapes():
    """The shapes of `cuattn bench --family prefill --quick` on a GPU."""
    return [f(c) for c in (False, True)
            for f in (lambda c: mha(2048, 64, c), lambda c: mha(2048, 128, c),
                      lambda c: mha(2048, 256, c), lambda c: gqa(2048, c))]


def label(shape):
    return "b{batch} s{seqlen} h{heads}/{kv_heads} d{head_dim}".format(**shape)


def decode_shape(batch, context, group):
    heads, kv_heads = group
    return dict(batch=batch, context=context, heads=heads, kv_heads=kv_heads,
                head_dim=DECODE_HEAD_DIM, page_size=PAGE_SIZE)


def decode_shapes():
    """The shapes of `cuattn bench --family decode`, in its order."""
    return [decode_shape(b, c, g) for b in DECODE_BATCHES for c in DECODE_CONTEXTS
            for g in DECODE_GROUPS]


def decode_quick_shapes():
    """The shapes of `cuattn bench --family decode --quick` on a GPU: the targets' and two more."""
    return [decode_shape(1, 64 * 1024, (32, 8)), decode_shape(8, 8192, (32, 8)),
            decode_shape(64, 8192, (32, 8)), decode_shape(64, 8192, (32, 1))]


def context_label(context):
    """`8k` for 8192 tokens, the number itself when it is no multiple of 1024 (as cuattn)."""
    if context >= 1024 and context % 1024 == 0:
        return "{}k".format(context // 1024)
    return str(context)


def decode_label(shape):
    """`b64 ctx8k h32/8 d128`, as cuattn labels its decode rows."""
    return "b{} ctx{} h{}/{} d{}".format(shape["batch"], context_label(shape["context"]),
                                         shape["heads"], shape["kv_heads"], shape["head_dim"])


def kv_bytes(shape):
    """The KV bytes a decode step reads: every cached token's K and V of every KV head, bf16."""
    return shape["batch"] * shape["context"] * shape["kv_heads"] * shape["head_dim"] * 2 * 2


def gib(n):
    return "{:.1f} GiB".format(n / float(1 << 30))


def visible_pairs(seqlen_q, seqlen_k, causal):
    """(query, key) pairs of one sequence and head left by the mask; causal is aligned to the
    bottom-right corner, as in cuattn: query i sees key j iff j <= i + seqlen_k - seqlen_q."""
    if not causal:
        return seqlen_q * seqlen_k
    return sum(min(max(i + seqlen_k - seqlen_q + 1, 0), seqlen_k) for i in range(seqlen_q))


def flops(shape):
    pairs = visible_pairs(shape["seqlen"], shape["seqlen"], shape["causal"])
    return 4.0 * pairs * shape["batch"] * shape["heads"] * shape["head_dim"]


class Timer:
    """CUDA events around each run, the L2 flushed (outside the events) before every run."""

    def __init__(self, torch):
        self.torch = torch
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        l2 = getattr(props, "L2_cache_size", 0) or 0
        self.flush = torch.empty(max(2 * l2, MIN_FLUSH_BYTES), dtype=torch.uint8, device="cuda")

    def time(self, fn, warmup, runs):
        torch = self.torch
        for _ in range(warmup):
            self.flush.zero_()
            fn()
        events = []
        for _ in range(runs):
            self.flush.zero_()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in events]


class Budget:
    """How many runs to time, as in cuattn: about target_ms of timed work, within bounds."""

    def __init__(self, quick):
        self.target_ms, self.min_runs, self.max_runs = (30.0, 3, 10) if quick else (150.0, 5, 100)

    def plan(self, estimate_ms):
        warmup = 3 if estimate_ms < 1.0 else 1
        wanted = int(-(-self.target_ms // max(estimate_ms, 1e-3)))
        return warmup, min(max(wanted, self.min_runs), self.max_runs)


def measure(timer, budget, fn):
    """(median ms, min ms, runs): one untimed run (lazy initialization), one to estimate, then
    warm-up and timed runs."""
    estimate = timer.time(fn, 1, 1)[0]
    warmup, runs = budget.plan(estimate)
    times = timer.time(fn, warmup, runs)
    return statistics.median(times), min(times), len(times)


class Inputs:
    """Random bf16 q, k, v for one shape in FlashAttention's layout [batch, seqlen, heads,
    head_dim], viewed as [batch, heads, seqlen, head_dim] (strided, last dim contiguous) for
    PyTorch's attention, as an engine holding cuattn's layout would pass them."""

    def __init__(self, torch, shape):
        b, s, h, kvh, d = (shape[k] for k in ("batch", "seqlen", "heads", "kv_heads", "head_dim"))

        def randn(heads):
            return torch.randn(b, s, heads, d, dtype=torch.bfloat16, device="cuda").transpose(1, 2)

        self.q, self.k, self.v = randn(h), randn(kvh), randn(kvh)
        self.gqa = h != kvh


def sdpa_fn(inputs, shape):
    import torch.nn.functional as F
    kwargs = {"is_causal": shape["causal"]}
    if inputs.gqa:
        kwargs["enable_gqa"] = True
    return lambda: F.scaled_dot_product_attention(inputs.q, inputs.k, inputs.v, **kwargs)


def sdpa_backend(name):
    from torch.nn.attention import SDPBackend
    return {"sdpa_flash": SDPBackend.FLASH_ATTENTION,
            "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[name]


def causal_mask(b, h, q_idx, kv_idx):
    """FlexAttention's mask_mod for causal attention (seqlen_q == seqlen_k here)."""
    return q_idx >= kv_idx


def raise_recompile_limits(torch):
    """FlexAttention recompiles for every shape (dynamic=False); past Dynamo's recompile limit it
    would fall back to eager, which materializes the scores. Raise the limits under every name
    they have had."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(config, name):
            try:
                setattr(config, name, max(getattr(config, name), 1024))
            except (AttributeError, TypeError, ValueError):
                pass


def flex_priority(shape):
    """Order of the FlexAttention pass: head dim 128 (MHA, then GQA) first, then 64, then 256;
    short sequences before long ones."""
    rank = {(128, False): 0, (128, True): 1, (64, False): 2, (256, False): 3}
    return rank.get((shape["head_dim"], shape["heads"] != shape["kv_heads"]), 4), shape["seqlen"]


def row(backend, shape, **fields):
    out = dict(backend=backend, shape=label(shape), batch=shape["batch"],
               seqlen_q=shape["seqlen"], seqlen_k=shape["seqlen"], heads=shape["heads"],
               kv_heads=shape["kv_heads"], head_dim=shape["head_dim"], causal=shape["causal"],
               dtype="bf16", flops=flops(shape), ms=None, min_ms=None, runs=0, tflops=None,
               error=None)
    out.update(fields)
    return out


def timed_row(backend, shape, result, **extra):
    ms, min_ms, runs = result
    return row(backend, shape, ms=ms, min_ms=min_ms, runs=runs,
               tflops=flops(shape) / (ms * 1e-3) / 1e12, **extra)


def write_json(report, path):
    """Rewrites the whole report (after every row, so a run cut short leaves what it measured)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, path)


def error_text(e):
    text = "{}: {}".format(type(e).__name__, e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def shape_key(r):
    return (r["batch"], r["seqlen_q"], r["seqlen_k"], r["heads"], r["kv_heads"], r["head_dim"],
            r["causal"])


def cell(r):
    """A row's TFLOP/s for the table, or why there is none."""
    if r is None:
        return "-"
    if r.get("error"):
        return "skip" if r["error"].startswith("skipped") else "err"
    return "{:.1f}".format(r["tflops"])


def load_report(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print("{}: {}".format(path, e))
        return {"rows": []}


def table(ours_path, anchors_path, tuned=()):
    """The table of the family the files hold (sparse, decode or prefill)."""
    ours, anchors = load_report(ours_path), load_report(anchors_path)
    if "sparse" in (ours.get("family"), anchors.get("family")):
        if tuned:
            return "--tuned applies to prefill tables only"
        return sparse_table(ours, anchors)
    if "decode" in (ours.get("family"), anchors.get("family")):
        if tuned:
            return "--tuned applies to prefill tables only"
        return decode_table(ours, anchors)
    return prefill_table(ours, anchors, tuned)


def prefill_table(ours, anchors, tuned=()):
    """cuattn's rows (one column per kernel, with % of the mma.sync ceiling) next to the anchors
    (one column per backend), TFLOP/s per shape, in cuattn's shape order. With `tuned` (pairs of
    a label and a `cuattn bench --json` file of a tuning build), one more column per build, and
    only the shapes those builds ran."""
    tuned = [(label, load_report(path)) for label, path in tuned]
    kernels = list(dict.fromkeys(r["kernel"] for r in ours["rows"]))
    backends = [b for b in BACKENDS if any(r["backend"] == b for r in anchors["rows"])]
    by_kernel = {(r["kernel"], shape_key(r)): r for r in ours["rows"]}
    by_backend = {(r["backend"], shape_key(r)): r for r in anchors["rows"]}
    every_row = ours["rows"] + anchors["rows"] + [r for _, rep in tuned for r in rep["rows"]]
    keys = list(dict.fromkeys(shape_key(r) for r in every_row))
    labels = {shape_key(r): r["shape"] for r in every_row}
    ceiling = (ours.get("mma_ceiling") or {}).get("tflops")
    lines = ["prefill {}, TFLOP/s; {}, commit {}; mma.sync ceiling {}".format(
        ours.get("dtype", "bf16"), ours.get("device") or anchors.get("device"),
        ours.get("commit") or anchors.get("commit") or "unknown",
        "{:.1f} TFLOP/s".format(ceiling) if ceiling else "not measured")]
    if ours.get("emulator"):
        lines.append("cuattn ran on the emulator: its numbers are no performance numbers")
    header = "{:<24} {:<6}".format("shape", "causal")
    for k in kernels:
        header += " {:>11} {:>5}".format(k[:11], "%mma")
    for b in backends:
        header += " {:>11}".format(b[:11])
    by_tuned = {(label, shape_key(r)): r for label, report in tuned for r in report["rows"]}
    if tuned:
        lines.append("extra columns, flash on the same shapes: a tile table forced (compact, "
                     "wide) or a tuning build (CUATTN_FLASH_TUNE, hd<tile>-<m tiles>-<key tile>-"
                     "<stages>[-<warps>[-<schedule>[-<fma exp2>]]], schedule 1 ping-pong, 2 "
                     "pipelined; fma exp2 the quarters of exp2s on the FMA pipe)")
        keys = [k for k in keys if any((label, k) in by_tuned for label, _ in tuned)]
        label_width = max(16, *(len(label) for label, _ in tuned))
        for label, _ in tuned:
            header += " {:>{}}".format(label, label_width)
    lines.append(header)
    for key in keys:
        line = "{:<24} {:<6}".format(labels[key], "yes" if key[-1] else "no")
        for k in kernels:
            r = by_kernel.get((k, key))
            pct = r.get("pct_of_mma_ceiling") if r and not r.get("error") else None
            line += " {:>11} {:>5}".format(cell(r), "{:.0f}".format(pct) if pct else "-")
        for b in backends:
            line += " {:>11}".format(cell(by_backend.get((b, key))))
        for label, _ in tuned:
            line += " {:>{}}".format(cell(by_tuned.get((label, key))), label_width)
        lines.append(line)
    return "\n".join(lines)


def decode_key(r):
    return (r["batch"], r["context"], r["heads"], r["kv_heads"], r["head_dim"], r["page_size"])


def gbps_cell(r):
    """A decode row's GB/s for the table, or why there is none."""
    if r is None:
        return "-"
    if r.get("skipped") or (r.get("error") or "").startswith("skipped"):
        return "skip"
    if r.get("error") or r.get("gbps") is None:
        return "err"
    return "{:.1f}".format(r["gbps"])


def decode_table(ours, anchors):
    """cuattn's decode rows (split-KV auto and off: GB/s, % of the copy, splits) next to the
    anchors (GB/s of the same KV bytes), in cuattn's shape order; then each target of cuattn's
    with its verdict and whether cuattn's row is ahead of every PyTorch path that ran."""
    copy = ours.get("copy_ceiling") or {}
    both = copy.get("read_written_gbps")
    lines = ["decode {}, GB/s of KV read; {}, commit {}; copy ceiling {}".format(
        ours.get("dtype", "bf16"), ours.get("device") or anchors.get("device"),
        ours.get("commit") or anchors.get("commit") or "unknown",
        "{:.1f} GB/s read + written ({:.1f} read); % copy divides by read + written".format(
            both, copy.get("read_gbps") or 0.0) if both else "not measured")]
    if ours.get("emulator"):
        lines.append("cuattn ran on the emulator: its numbers are no performance numbers")
    lines.append("sdpa_gather: the gather from the pages timed with SDPA; sdpa_contiguous and "
                 "flex: K and V already contiguous (no paging)")
    by_split = {(r["split"], decode_key(r)): r for r in ours.get("rows", [])}
    backends = [b for b in DECODE_BACKENDS if any(r["backend"] == b for r in anchors["rows"])]
    by_backend = {(r["backend"], decode_key(r)): r for r in anchors["rows"]}
    every_row = ours.get("rows", []) + anchors["rows"]
    keys = list(dict.fromkeys(decode_key(r) for r in every_row))
    labels = {decode_key(r): r["shape"] for r in every_row}

    def pct(r):
        ok = r and not r.get("error") and not r.get("skipped") and r.get("pct_of_copy")
        return "{:.0f}".format(r["pct_of_copy"]) if ok else "-"

    def ahead(key):
        """Whether cuattn's split-auto row beats every anchor that ran on `key`."""
        ours_row = by_split.get(("auto", key))
        theirs = [by_backend.get((b, key)) for b in backends]
        theirs = [r["gbps"] for r in theirs if r and not r.get("error") and r.get("gbps")]
        if not ours_row or ours_row.get("error") or ours_row.get("skipped") or not theirs:
            return "-", None
        return ("yes" if ours_row["gbps"] > max(theirs) else "no"), max(theirs)

    header = "{:<24} {:>9} {:>4} {:>4} {:>9} {:>4}".format("shape", "auto", "%cp", "spl", "off",
                                                            "%cp")
    for b in backends:
        header += " {:>15}".format(b)
    header += " {:>5}".format("ahead")
    lines.append(header)
    for key in keys:
        auto, off = by_split.get(("auto", key)), by_split.get(("off", key))
        splits = auto.get("num_splits") if auto else None
        line = "{:<24} {:>9} {:>4} {:>4} {:>9} {:>4}".format(
            labels[key], gbps_cell(auto), pct(auto), splits if splits else "-", gbps_cell(off),
            pct(off))
        for b in backends:
            line += " {:>15}".format(gbps_cell(by_backend.get((b, key))))
        line += " {:>5}".format(ahead(key)[0])
        lines.append(line)
    for batch, context, heads, kv_heads, target in DECODE_TARGETS:
        key = (batch, context, heads, kv_heads, DECODE_HEAD_DIM, PAGE_SIZE)
        r = by_split.get(("auto", key))
        label = decode_label(decode_shape(batch, context, (heads, kv_heads)))
        if r is None:
            continue
        if r.get("error") or r.get("skipped"):
            lines.append("target {} split auto: not measured ({})".format(
                label, r.get("error") or r.get("skipped")))
            continue
        verdict = "met" if r["pct_of_copy"] >= target else "not met"
        answer, best = ahead(key)
        versus = ("no PyTorch row" if best is None else
                  "{} (best PyTorch {:.1f} GB/s)".format(answer, best))
        splits = r.get("num_splits") or 1
        lines.append("target {} split auto ({} split{}): {:.1f}% of copy (target {:.0f}%): {}; "
                     "ahead of every PyTorch path: {}".format(
                         label, splits, "" if splits == 1 else "s", r["pct_of_copy"], target,
                         verdict, versus))
    return "\n".join(lines)


def import_torch():
    """PyTorch, or None with a line on stderr saying why it cannot be used."""
    try:
        import torch
    except ImportError as e:
        print("bench_anchors: PyTorch is not installed ({}); no anchors".format(e),
              file=sys.stderr)
        return None
    if not torch.cuda.is_available():
        print("bench_anchors: no CUDA device", file=sys.stderr)
        return None
    return torch


def report_header(torch, family):
    """The fields every anchors report starts with."""
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - the version is informational
        triton_version = None
    return {
        "family": family,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton_version,
        "cudnn": torch.backends.cudnn.version(),
        "commit": os.environ.get("CUATTN_COMMIT") or None,
        "dtype": "bf16",
        "rows": [],
    }


class PagedKv:
    """Random bf16 K and V pools of one decode shape, [num_pages, page_size, kv_heads, head_dim]
    (cuattn's Nhd layout), every page used, each sequence's pages drawn from a random permutation
    of the pool (a shuffled free list), the block table [batch, pages a sequence] in int64."""

    def __init__(self, torch, shape):
        b, ctx, page = shape["batch"], shape["context"], shape["page_size"]
        self.pages = -(-ctx // page)
        num_pages = b * self.pages
        dims = (num_pages, page, shape["kv_heads"], shape["head_dim"])
        self.k = torch.randn(*dims, dtype=torch.bfloat16, device="cuda")
        self.v = torch.randn(*dims, dtype=torch.bfloat16, device="cuda")
        self.block_table = torch.randperm(num_pages, device="cuda").view(b, self.pages)
        self.shape = shape

    def gather(self, pool):
        """One pool's keys (or values) of every sequence, [batch, kv_heads, context, head_dim]
        (a strided view of a fresh gathered copy)."""
        s = self.shape
        rows = pool[self.block_table]  # [batch, pages, page_size, kv_heads, head_dim]
        rows = rows.view(s["batch"], self.pages * s["page_size"], s["kv_heads"], s["head_dim"])
        return rows[:, :s["context"]].transpose(1, 2)


def decode_queries(torch, shape):
    """q of one new token a sequence: [batch, heads, 1, head_dim]."""
    return torch.randn(shape["batch"], shape["heads"], 1, shape["head_dim"],
                       dtype=torch.bfloat16, device="cuda")


def decode_row(backend, shape, **fields):
    out = dict(backend=backend, shape=decode_label(shape), batch=shape["batch"],
               context=shape["context"], q_len=1, heads=shape["heads"],
               kv_heads=shape["kv_heads"], group=shape["heads"] // shape["kv_heads"],
               head_dim=shape["head_dim"], page_size=shape["page_size"], dtype="bf16",
               kv_bytes=kv_bytes(shape), ms=None, min_ms=None, runs=0, gbps=None, error=None)
    out.update(fields)
    return out


def timed_decode_row(backend, shape, result, **extra):
    ms, min_ms, runs = result
    return decode_row(backend, shape, ms=ms, min_ms=min_ms, runs=runs,
                      gbps=kv_bytes(shape) / (ms * 1e-3) / 1e9, **extra)


def decode_skip_reason(torch, shape):
    """Why `shape` cannot run here, or None: over cuattn's KV budget, or two copies of its KV
    (the pages and the gathered or contiguous K and V) over the share of free memory."""
    need = kv_bytes(shape)
    if need > KV_BUDGET_BYTES:
        return "skipped: KV {} over the {} budget".format(gib(need), gib(KV_BUDGET_BYTES))
    free, _ = torch.cuda.mem_get_info()
    if 2 * need > FREE_MEMORY_SHARE * free:
        return "skipped: two copies of the KV ({}) need more than {:.0f}% of the {} free".format(
            gib(2 * need), 100 * FREE_MEMORY_SHARE, gib(free))
    return None


def decode_flex_priority(shape):
    """Order of the FlexAttention pass: cuattn's targets first, then the smallest KV first."""
    key = (shape["batch"], shape["context"], shape["heads"], shape["kv_heads"])
    is_target = any(key == t[:4] for t in DECODE_TARGETS)
    return 0 if is_target else 1, kv_bytes(shape)


def run_decode(args, backends, started):
    """The decode anchors: SDPA over the gathered pages and over contiguous KV for every shape,
    then FlexAttention within the budget; rows written to args.json as they come."""
    torch = import_torch()
    if torch is None:
        return 2
    torch.manual_seed(0)
    report = report_header(torch, "decode")
    report["sdpa_backends"] = "flash, efficient, cudnn (PyTorch picks; no math fallback)"
    report["kv_budget_bytes"] = KV_BUDGET_BYTES
    timer = Timer(torch)
    report["l2_flush_bytes"] = timer.flush.numel()
    budget = Budget(args.quick)
    shapes = decode_quick_shapes() if args.quick else decode_shapes()

    def add(r):
        report["rows"].append(r)
        if r["error"]:
            print("{:<15} {:<24} {}".format(r["backend"], r["shape"], r["error"]))
        else:
            print("{:<15} {:<24} {:>10.4f} {:>9.1f}".format(r["backend"], r["shape"], r["ms"],
                                                           r["gbps"]))
        sys.stdout.flush()
        write_json(report, args.json)

    print("decode anchors on {} (torch {}, triton {}, cuDNN {})".format(
        report["device"], report["torch"], report["triton"], report["cudnn"]))
    print("{:<15} {:<24} {:>10} {:>9}".format("backend", "shape", "ms", "GB/s"))
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    no_math = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
               SDPBackend.CUDNN_ATTENTION]
    with torch.no_grad():
        # SDPA: the gathered pages (gather timed), then the contiguous K and V made from them.
        sdpa = [b for b in backends if b.startswith("sdpa_")]
        for shape in shapes if sdpa else []:
            why = decode_skip_reason(torch, shape)
            if why:
                for name in sdpa:
                    add(decode_row(name, shape, error=why))
                continue
            gqa = {"enable_gqa": True} if shape["heads"] != shape["kv_heads"] else {}
            paged = k = v = gathered = contiguous = None
            try:
                q = decode_queries(torch, shape)
                paged = PagedKv(torch, shape)
                if "sdpa_gather" in sdpa:
                    def gathered(paged=paged, q=q):
                        return F.scaled_dot_product_attention(
                            q, paged.gather(paged.k), paged.gather(paged.v), **gqa)
                    try:
                        with sdpa_kernel(no_math):
                            add(timed_decode_row("sdpa_gather", shape,
                                                 measure(timer, budget, gathered)))
                    except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                        add(decode_row("sdpa_gather", shape, error=error_text(e)))
                if "sdpa_contiguous" in sdpa:
                    # One pool at a time, each dropped once copied: at most two copies of the KV.
                    k = paged.gather(paged.k).contiguous()
                    paged.k = None
                    v = paged.gather(paged.v).contiguous()
                    paged.v = None

                    def contiguous(q=q, k=k, v=v):
                        return F.scaled_dot_product_attention(q, k, v, **gqa)
                    try:
                        with sdpa_kernel(no_math):
                            add(timed_decode_row("sdpa_contiguous", shape,
                                                 measure(timer, budget, contiguous)))
                    except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                        add(decode_row("sdpa_contiguous", shape, error=error_text(e)))
            except Exception as e:  # noqa: BLE001 - out of memory setting the shape up
                done = {r["backend"] for r in report["rows"] if r["shape"] == decode_label(shape)}
                for name in sdpa:
                    if name not in done:
                        add(decode_row(name, shape, error=error_text(e)))
            finally:
                # The timed closures hold the tensors too (default arguments).
                paged = k = v = q = gathered = contiguous = None
                torch.cuda.empty_cache()

        # FlexAttention: one compilation per shape, so the targets first, on a budget.
        if "flex" in backends:
            flex, flex_error = None, None
            try:
                from torch.nn.attention.flex_attention import flex_attention
                raise_recompile_limits(torch)
                flex = torch.compile(flex_attention, dynamic=False)
            except Exception as e:  # noqa: BLE001 - no FlexAttention in this PyTorch
                flex_error = error_text(e)
            for shape in sorted(shapes, key=decode_flex_priority):
                if flex is None:
                    add(decode_row("flex", shape, error=flex_error))
                    continue
                why = decode_skip_reason(torch, shape)
                if why:
                    add(decode_row("flex", shape, error=why))
                    continue
                if time.monotonic() - started > args.budget_s:
                    add(decode_row("flex", shape, error="skipped: time budget of {:.0f} s "
                                   "spent".format(args.budget_s)))
                    continue
                q = k = v = None
                try:
                    q = decode_queries(torch, shape)
                    dims = (shape["batch"], shape["kv_heads"], shape["context"],
                            shape["head_dim"])
                    k = torch.randn(*dims, dtype=torch.bfloat16, device="cuda")
                    v = torch.randn(*dims, dtype=torch.bfloat16, device="cuda")
                    kwargs = {"enable_gqa": True} if shape["heads"] != shape["kv_heads"] else {}

                    def run(q=q, k=k, v=v, kwargs=kwargs):
                        return flex(q, k, v, **kwargs)

                    compile_start = time.monotonic()
                    run()
                    torch.cuda.synchronize()
                    compile_s = time.monotonic() - compile_start
                    add(timed_decode_row("flex", shape, measure(timer, budget, run),
                                         compile_s=round(compile_s, 2)))
                except Exception as e:  # noqa: BLE001 - a shape FlexAttention cannot compile
                    add(decode_row("flex", shape, error=error_text(e)))
                finally:
                    q = k = v = run = None
                    torch.cuda.empty_cache()
    report["wall_s"] = round(time.monotonic() - started, 1)
    write_json(report, args.json)
    return 0


# ---------------------------------------------------------------------------------------------
# Sparse: the rows of `cuattn bench --family sparse --mask-dir DIR`, read from DIR.
# ---------------------------------------------------------------------------------------------


def read_mask_npy(path):
    """A block matrix written by cuattn (uint8, or bool, 0 and 1, C order): (shape, bytes). Plain
    Python, so that the masks need no NumPy and the split below can be checked anywhere."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError("{}: not a .npy file".format(path))
    major = data[6]
    width = 2 if major == 1 else 4
    header_len = int.from_bytes(data[8:8 + width], "little")
    start = 8 + width + header_len
    header = ast.literal_eval(data[8 + width:start].decode("latin1"))
    if header["descr"] not in ("|u1", "|b1") or header["fortran_order"]:
        raise ValueError("{}: {} (fortran_order {}), expected C-order uint8 or bool".format(
            path, header["descr"], header["fortran_order"]))
    shape = tuple(header["shape"])
    count = 1
    for d in shape:
        count *= d
    blocks = data[start:]
    if len(blocks) != count or any(b > 1 for b in blocks):
        raise ValueError("{}: {} bytes of 0 and 1 expected for shape {}".format(path, count, shape))
    return shape, blocks


def block_cut(i, j, entry):
    """How the element rule cuts block (i, j) of a manifest row, as cuattn's BlockMask does:
    "hidden" (no element visible), "full" (every element visible: no mask arithmetic) or
    "partial" (mask_mod applies). Causal is bottom-right aligned: query r sees key c iff
    c <= r + seqlen_k - seqlen_q."""
    bq, bk = entry["block_q"], entry["block_k"]
    len_q, len_k = entry["seqlen_q"], entry["seqlen_k"]
    first_row, key0, key1 = i * bq, j * bk, (j + 1) * bk
    if first_row >= len_q or key0 >= len_k:
        return "hidden"
    if not entry["causal"]:
        return "full" if key1 <= len_k else "partial"
    diag = len_k - len_q
    last_row = min((i + 1) * bq, len_q) - 1
    if last_row + diag < key0:
        return "hidden"
    whole = key1 <= len_k and first_row + diag + 1 >= key1
    return "full" if whole else "partial"


def compressed_lists(entry, shape, blocks):
    """FlexAttention's (and cuattn's) compressed rows of a block matrix `[B, H, nq, nk]` under the
    row's element rule: (partial counts, partial indices, full counts, full indices) as nested
    lists, counts [B][H][nq], indices [B][H][nq][nk] (each row's listed blocks first, ascending,
    padded with 0)."""
    b_dim, h_dim, nq, nk = shape
    cuts = [[block_cut(i, j, entry) for j in range(nk)] for i in range(nq)]
    lists = {"partial": ([], []), "full": ([], [])}
    for b in range(b_dim):
        for kind in lists:
            lists[kind][0].append([])
            lists[kind][1].append([])
        for h in range(h_dim):
            for kind in lists:
                lists[kind][0][b].append([])
                lists[kind][1][b].append([])
            for i in range(nq):
                base = ((b * h_dim + h) * nq + i) * nk
                for kind, (counts, indices) in lists.items():
                    listed = [j for j in range(nk) if blocks[base + j] and cuts[i][j] == kind]
                    counts[b][h].append(len(listed))
                    indices[b][h].append(listed + [0] * (nk - len(listed)))
    return lists["partial"] + lists["full"]


def sparse_shape(entry):
    """The shape dict Inputs takes for a manifest row."""
    return dict(batch=entry["batch"], seqlen=entry["seqlen_q"], heads=entry["heads"],
                kv_heads=entry["kv_heads"], head_dim=entry["head_dim"], causal=entry["causal"])


def flex_block_mask(torch, entry, mask_dir):
    """FlexAttention's BlockMask of a manifest row, from its mask file: the same full and partial
    blocks as cuattn's (checked against the counts cuattn wrote), causal_mask on the partial
    ones under a causal rule."""
    from torch.nn.attention.flex_attention import BlockMask
    shape, blocks = read_mask_npy(os.path.join(mask_dir, entry["mask_file"]))
    if len(shape) != 4 or list(shape) != list(entry["mask_dims"]):
        raise ValueError("{}: shape {} but the manifest says {}".format(
            entry["mask_file"], shape, entry["mask_dims"]))
    p_counts, p_indices, f_counts, f_indices = compressed_lists(entry, shape, blocks)
    got = (sum(sum(sum(h) for h in b) for b in f_counts),
           sum(sum(sum(h) for h in b) for b in p_counts))
    if got != (entry["full_blocks"], entry["partial_blocks"]):
        raise ValueError("{} full and {} partial blocks, cuattn's mask has {} and {}".format(
            got[0], got[1], entry["full_blocks"], entry["partial_blocks"]))

    def tensor(x):
        return torch.tensor(x, dtype=torch.int32, device="cuda")

    return BlockMask.from_kv_blocks(
        tensor(p_counts), tensor(p_indices), tensor(f_counts), tensor(f_indices),
        BLOCK_SIZE=(entry["block_q"], entry["block_k"]),
        mask_mod=causal_mask if entry["causal"] else None,
        seq_lengths=(entry["seqlen_q"], entry["seqlen_k"]))


def flex_kernel_options(entry):
    """FlexAttention's tile must divide the sparse block (its default at hd128 is 128 query rows):
    64 x 64 tiles for blocks under 128, its default otherwise."""
    if entry["block_q"] < 128 or entry["block_k"] < 128:
        return {"BLOCK_M": min(64, entry["block_q"]), "BLOCK_N": min(64, entry["block_k"])}
    return None


def sparse_compile_key(entry):
    """What a FlexAttention compilation depends on here: the shape, the rule and the block size."""
    return (entry["batch"], entry["seqlen_q"], entry["heads"], entry["kv_heads"],
            entry["head_dim"], entry["causal"], entry["block_q"], entry["block_k"])


def sparse_row(backend, entry, **fields):
    out = {k: entry.get(k) for k in (
        "id", "shape", "batch", "seqlen_q", "seqlen_k", "heads", "kv_heads", "head_dim", "causal",
        "dtype", "block_q", "block_k", "mask", "mask_file", "density", "visible_pairs", "flops")}
    out.update(backend=backend, ms=None, min_ms=None, runs=0, tflops=None, error=None)
    out.update(fields)
    return out


def timed_sparse_row(backend, entry, result, **extra):
    ms, min_ms, runs = result
    return sparse_row(backend, entry, ms=ms, min_ms=min_ms, runs=runs,
                      tflops=entry["flops"] / (ms * 1e-3) / 1e12, **extra)


def load_manifest(mask_dir):
    """The manifest cuattn wrote into `mask_dir` (`masks.json`), or None with a line on stderr."""
    path = os.path.join(mask_dir, "masks.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        print("bench_anchors: {}: {} (write it with `cuattn bench --family sparse --mask-dir "
              "DIR`)".format(path, e), file=sys.stderr)
        return None
    if manifest.get("family") != "sparse" or not isinstance(manifest.get("rows"), list):
        print("bench_anchors: {}: not a sparse manifest".format(path), file=sys.stderr)
        return None
    return manifest


def run_sparse(args, backends, started):
    """The sparse anchors on the rows of cuattn's manifest: SDPA-flash on the dense rows, then
    FlexAttention with each sparse row's block mask, the target first, within the budget; rows
    written to args.json as they come."""
    if not args.mask_dir:
        print("bench_anchors: --family sparse needs --mask-dir DIR (cuattn bench --family sparse "
              "--mask-dir DIR writes it)", file=sys.stderr)
        return 2
    manifest = load_manifest(args.mask_dir)
    if manifest is None:
        return 2
    torch = import_torch()
    if torch is None:
        return 2
    torch.manual_seed(0)
    report = report_header(torch, "sparse")
    report["mask_dir"] = args.mask_dir
    report["target"] = manifest.get("target")
    timer = Timer(torch)
    report["l2_flush_bytes"] = timer.flush.numel()
    budget = Budget(args.quick)
    entries = manifest["rows"]

    def add(r):
        report["rows"].append(r)
        if r["error"]:
            print("{:<11} {:<62} {}".format(r["backend"], r["id"], r["error"]))
        else:
            print("{:<11} {:<62} {:>10.3f} {:>9.1f}".format(r["backend"], r["id"], r["ms"],
                                                           r["tflops"]))
        sys.stdout.flush()
        write_json(report, args.json)

    print("sparse anchors on {} (torch {}, triton {}, cuDNN {}), masks from {}".format(
        report["device"], report["torch"], report["triton"], report["cudnn"], args.mask_dir))
    print("{:<11} {:<62} {:>10} {:>9}".format("backend", "row", "ms", "TFLOP/s"))
    inputs = {}

    def inputs_of(entry):
        """The inputs of a row's shape (made once per shape; the rule does not change them)."""
        shape = sparse_shape(entry)
        key = tuple(shape[k] for k in ("batch", "seqlen", "heads", "kv_heads", "head_dim"))
        if key not in inputs:
            inputs[key] = Inputs(torch, shape)
        return inputs[key], shape

    with torch.no_grad():
        if "sdpa_flash" in backends:
            from torch.nn.attention import sdpa_kernel
            for entry in (e for e in entries if e["kernel"] == "flash"):
                try:
                    given, shape = inputs_of(entry)
                    with sdpa_kernel([sdpa_backend("sdpa_flash")]):
                        result = measure(timer, budget, sdpa_fn(given, shape))
                    add(timed_sparse_row("sdpa_flash", entry, result))
                except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                    add(sparse_row("sdpa_flash", entry, error=error_text(e)))

        if "flex" in backends:
            flex, flex_error = None, None
            try:
                from torch.nn.attention.flex_attention import flex_attention
                raise_recompile_limits(torch)
                flex = torch.compile(flex_attention, dynamic=False)
            except Exception as e:  # noqa: BLE001 - no FlexAttention in this PyTorch
                flex_error = error_text(e)
            target_id = (manifest.get("target") or {}).get("id")
            target_key = next((sparse_compile_key(e) for e in entries if e["id"] == target_id),
                              None)
            sparse = [(n, e) for n, e in enumerate(entries) if e["kernel"] != "flash"]
            # The target first, then the rows of its compilation, then the others in order.
            sparse.sort(key=lambda ne: (ne[1]["id"] != target_id,
                                        sparse_compile_key(ne[1]) != target_key, ne[0]))
            for _, entry in sparse:
                if flex is None:
                    add(sparse_row("flex", entry, error=flex_error))
                    continue
                if time.monotonic() - started > args.budget_s:
                    add(sparse_row("flex", entry, error="skipped: time budget of {:.0f} s "
                                   "spent".format(args.budget_s)))
                    continue
                block_mask = None
                try:
                    given, shape = inputs_of(entry)
                    block_mask = flex_block_mask(torch, entry, args.mask_dir)
                    kwargs = {"block_mask": block_mask}
                    if given.gqa:
                        kwargs["enable_gqa"] = True
                    options = flex_kernel_options(entry)
                    if options:
                        kwargs["kernel_options"] = options

                    def run(given=given, kwargs=kwargs):
                        return flex(given.q, given.k, given.v, **kwargs)

                    compile_start = time.monotonic()
                    run()
                    torch.cuda.synchronize()
                    compile_s = time.monotonic() - compile_start
                    add(timed_sparse_row("flex", entry, measure(timer, budget, run),
                                         compile_s=round(compile_s, 2), kernel_options=options))
                except Exception as e:  # noqa: BLE001 - a mask FlexAttention cannot compile
                    add(sparse_row("flex", entry, error=error_text(e)))
                finally:
                    block_mask = run = None
    report["wall_s"] = round(time.monotonic() - started, 1)
    write_json(report, args.json)
    return 0


def sparse_table(ours, anchors):
    """cuattn's sparse rows (ms, effective TFLOP/s, time over its dense kernel's) next to
    FlexAttention with the same block mask and SDPA-flash on the dense rows, in cuattn's row
    order; then the target with both of its thresholds."""
    lines = ["sparse {}, effective TFLOP/s (4 x visible pairs x head_dim / time); {}, commit "
             "{}".format(ours.get("dtype", "bf16"), ours.get("device") or anchors.get("device"),
                         ours.get("commit") or anchors.get("commit") or "unknown")]
    if ours.get("emulator"):
        lines.append("cuattn ran on the emulator: its numbers are no performance numbers")
    lines.append("/dense: cuattn's time over its dense flash kernel's on the same shape; x flex: "
                 "FlexAttention's time (same block mask) over cuattn's; sdpa: SDPA-flash, dense "
                 "rows")
    by_id = {r["id"]: r for r in ours.get("rows", [])}
    flex = {r["id"]: r for r in anchors.get("rows", []) if r["backend"] == "flex"}
    sdpa = {r["id"]: r for r in anchors.get("rows", []) if r["backend"] == "sdpa_flash"}
    every_row = ours.get("rows", []) + anchors.get("rows", [])
    ids = list(dict.fromkeys(r["id"] for r in every_row))
    first = {}
    for r in every_row:
        first.setdefault(r["id"], r)

    def ok(r):
        return r is not None and not r.get("error") and r.get("ms")

    def speedup(key):
        """FlexAttention's time over cuattn's on row `key`, or None."""
        mine, theirs = by_id.get(key), flex.get(key)
        return theirs["ms"] / mine["ms"] if ok(mine) and ok(theirs) else None

    header = "{:<24} {:<6} {:<38} {:>7} {:>7} {:>9} {:>7} {:>6} {:>9} {:>7} {:>6} {:>7}".format(
        "shape", "causal", "mask", "block", "density", "ms", "TF/s", "/dense", "flex ms", "TF/s",
        "x flex", "sdpa TF")
    lines.append(header)
    for key in ids:
        r = first[key]
        mine, theirs = by_id.get(key), flex.get(key)
        block = "{}x{}".format(r["block_q"], r["block_k"]) if r.get("block_q") else "-"
        density = "{:.3f}".format(r["density"]) if r.get("density") is not None else "-"
        ratio = mine.get("ratio_to_dense") if ok(mine) else None
        x = speedup(key)
        line = "{:<24} {:<6} {:<38} {:>7} {:>7}".format(
            r["shape"], "yes" if r["causal"] else "no", r["mask"], block, density)
        line += " {:>9} {:>7}".format("{:.3f}".format(mine["ms"]) if ok(mine) else cell(mine),
                                      cell(mine))
        line += " {:>6}".format("{:.3f}".format(ratio) if ratio is not None else "-")
        line += " {:>9} {:>7}".format(
            "{:.3f}".format(theirs["ms"]) if ok(theirs) else cell(theirs), cell(theirs))
        line += " {:>6}".format("{:.2f}x".format(x) if x else "-")
        line += " {:>7}".format(cell(sdpa.get(key)) if key in sdpa else "-")
        lines.append(line)
    target = ours.get("verdict") or anchors.get("target")
    if target:
        key = target["id"]
        mine = by_id.get(key)
        if not ok(mine) or mine.get("ratio_to_dense") is None:
            lines.append("target {}: not measured ({})".format(
                key, (mine or {}).get("error") or "no cuattn row"))
        else:
            ratio, x = mine["ratio_to_dense"], speedup(key)
            most, least = target["max_ratio_to_dense"], target["min_speedup_over_flex"]
            versus = ("{:.2f}x FlexAttention with the same block mask (at least {}x): {}".format(
                x, least, "met" if x >= least else "not met") if x else
                "no FlexAttention row ({})".format(cell(flex.get(key))))
            lines.append("target {}: {:.3f} of dense (at most {}): {}; {}".format(
                key, ratio, most, "met" if ratio <= most else "not met", versus))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument("--table", nargs=2, metavar=("BENCH_JSON", "ANCHORS_JSON"),
                        help="print cuattn's results next to the anchors and exit")
    parser.add_argument("--tuned", action="append", default=[], metavar="LABEL=BENCH_JSON",
                        help="with --table: a tuning build's results as one more column "
                             "(repeatable); the table keeps only the shapes they ran")
    parser.add_argument("--family", choices=["prefill", "decode", "sparse"], default="prefill",
                        help="which of cuattn's benchmarks to anchor (default prefill)")
    parser.add_argument("--mask-dir",
                        help="sparse: the folder `cuattn bench --family sparse --mask-dir` wrote "
                             "(masks.json and one .npy block matrix a row)")
    parser.add_argument("--quick", action="store_true", help="the shapes of cuattn's --quick")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="wall-clock seconds for the whole run; the FlexAttention pass "
                             "stops when they are spent (default 150)")
    parser.add_argument("--backends",
                        help="comma-separated subset of " + ",".join(BACKENDS) + " (prefill), "
                             + ",".join(DECODE_BACKENDS) + " (decode) or "
                             + ",".join(SPARSE_BACKENDS) + " (sparse); default: all")
    args = parser.parse_args()
    if args.table:
        tuned = [t.split("=", 1) for t in args.tuned]
        if any(len(t) != 2 for t in tuned):
            parser.error("--tuned takes LABEL=BENCH_JSON")
        print(table(*args.table, tuned=tuned))
        return 0
    if not args.json:
        parser.error("--json FILE is required to run the anchors")
    started = time.monotonic()
    choices = {"decode": DECODE_BACKENDS, "sparse": SPARSE_BACKENDS}.get(args.family, BACKENDS)
    backends = ([b.strip() for b in args.backends.split(",") if b.strip()] if args.backends
                else list(choices))
    unknown = [b for b in backends if b not in choices]
    if unknown:
        parser.error("unknown {} backend(s) {}; choose from {}".format(args.family, unknown,
                                                                      choices))
    if args.mask_dir and args.family != "sparse":
        parser.error("--mask-dir applies to --family sparse only")
    if args.family == "decode":
        return run_decode(args, backends, started)
    if args.family == "sparse":
        return run_sparse(args, backends, started)
    return run_prefill(args, backends, started)


def run_prefill(args, backends, started):
    """The prefill anchors: SDPA's backends on every shape, then FlexAttention within the budget;
    rows written to args.json as they come."""
    torch = import_torch()
    if torch is None:
        return 2
    torch.manual_seed(0)
    report = report_header(torch, "prefill")
    timer = Timer(torch)
    report["l2_flush_bytes"] = timer.flush.numel()
    budget = Budget(args.quick)
    shapes = quick_shapes() if args.quick else prefill_shapes()

    def add(r):
        report["rows"].append(r)
        if r["error"]:
            print("{:<11} {:<24} {:<6} {}".format(r["backend"], r["shape"],
                                                  "yes" if r["causal"] else "no", r["error"]))
        else:
            print("{:<11} {:<24} {:<6} {:>10.3f} {:>9.1f}".format(
                r["backend"], r["shape"], "yes" if r["causal"] else "no", r["ms"], r["tflops"]))
        sys.stdout.flush()
        write_json(report, args.json)

    print("anchors on {} (torch {}, triton {}, cuDNN {})".format(
        report["device"], report["torch"], report["triton"], report["cudnn"]))
    print("{:<11} {:<24} {:<6} {:>10} {:>9}".format("backend", "shape", "causal", "ms",
                                                    "TFLOP/s"))
    with torch.no_grad():
        # SDPA: cheap to set up, every shape.
        sdpa = [b for b in backends if b.startswith("sdpa_")]
        if sdpa:
            from torch.nn.attention import sdpa_kernel
            for shape in shapes:
                inputs = Inputs(torch, shape)
                for name in sdpa:
                    try:
                        with sdpa_kernel([sdpa_backend(name)]):
                            result = measure(timer, budget, sdpa_fn(inputs, shape))
                        add(timed_row(name, shape, result))
                    except Exception as e:  # noqa: BLE001 - a backend may refuse a shape
                        add(row(name, shape, error=error_text(e)))
                del inputs
                torch.cuda.empty_cache()

        # FlexAttention: one compilation per shape, so most relevant shapes first, on a budget.
        if "flex" in backends:
            flex, flex_error = None, None
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention
                raise_recompile_limits(torch)
                flex = torch.compile(flex_attention, dynamic=False)
            except Exception as e:  # noqa: BLE001 - no FlexAttention in this PyTorch
                flex_error = error_text(e)
            for shape in sorted(shapes, key=flex_priority):
                if flex is None:
                    add(row("flex", shape, error=flex_error))
                    continue
                if time.monotonic() - started > args.budget_s:
                    add(row("flex", shape, error="skipped: time budget of {:.0f} s spent".format(
                        args.budget_s)))
                    continue
                try:
                    inputs = Inputs(torch, shape)
                    block_mask = None
                    if shape["causal"]:
                        block_mask = create_block_mask(causal_mask, B=None, H=None,
                                                       Q_LEN=shape["seqlen"],
                                                       KV_LEN=shape["seqlen"], device="cuda")
                    kwargs = {"block_mask": block_mask}
                    if inputs.gqa:
                        kwargs["enable_gqa"] = True

                    def run(inputs=inputs, kwargs=kwargs):
                        return flex(inputs.q, inputs.k, inputs.v, **kwargs)

                    compile_start = time.monotonic()
                    run()
                    torch.cuda.synchronize()
                    compile_s = time.monotonic() - compile_start
                    add(timed_row("flex", shape, measure(timer, budget, run),
                                  compile_s=round(compile_s, 2)))
                except Exception as e:  # noqa: BLE001 - a shape FlexAttention cannot compile
                    add(row("flex", shape, error=error_text(e)))
                finally:
                    inputs = block_mask = None
                    torch.cuda.empty_cache()
    report["wall_s"] = round(time.monotonic() - started, 1)
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! The emulator's global-memory traffic counters (`cuattn::emu`): exact bytes on kernels whose
//! accesses are known, the flash kernel's K/V reads under causal and sliding-window masks derived
//! from its tiles, recording scoped to a thread, and the C API's refusals. Emulator only.

mod common;

use std::collections::BTreeSet;
use std::ffi::{c_void, CStr};
use std::sync::Barrier;

use common::{last_error, MemcheckSetting};
use cuattn::check::{run_case_with, AttentionCase, CheckOptions, Layout};
use cuattn::emu::{Traffic, TrafficRecorder};
use cuattn::ffi::{self, cuattn_status as Status};
use cuattn::{
    attention_into, flash_plan, AttentionOptions, AttentionParams, DType, Device, FlashTiles,
    Kernel, Tensor,
};
use half::bf16;

const BF16_BYTES: u64 = 2;
const LSE_BYTES: u64 = 4;

/// Keys [begin, end) query `row` sees: the kernels' mask (`visible_keys` in csrc/common/mask.cuh,
/// as cuattn.h states it), bottom-right aligned, -1 unbounded.
fn visible(row: i64, len_q: i64, len_k: i64, left: i64, right: i64) -> (i64, i64) {
    let diag = row + len_k - len_q;
    let begin = if left < 0 { 0 } else { (diag - left).max(0) };
    let end = if right < 0 {
        len_k
    } else {
        (diag + right + 1).min(len_k)
    };
    (begin, end.max(begin))
}

/// The problem of one test launch: dense bf16 [batch, seqlen, heads, head_dim] tensors.
#[derive(Clone, Copy)]
struct Problem {
    batch: usize,
    seqlen_q: usize,
    seqlen_k: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Problem {
    fn square(seqlen: usize, head_dim: usize) -> Problem {
        Problem {
            batch: 1,
            seqlen_q: seqlen,
            seqlen_k: seqlen,
            heads: 1,
            kv_heads: 1,
            head_dim,
        }
    }

    fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads, self.head_dim]
    }

    fn k_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.kv_heads, self.head_dim]
    }

    /// Bytes of one head's row of q, k, v or out.
    fn row_bytes(&self) -> u64 {
        self.head_dim as u64 * BF16_BYTES
    }

    /// Query rows of every (batch, head): the times one row's q, out or LSE is touched.
    fn query_rows(&self) -> u64 {
        (self.batch * self.heads * self.seqlen_q) as u64
    }
}

/// Labeled tensors "q", "k", "v", "out" and "lse" of `problem` on the emulator.
struct Tensors {
    q: Tensor<bf16>,
    k: Tensor<bf16>,
    v: Tensor<bf16>,
    out: Tensor<bf16>,
    lse: Tensor<f32>,
}

impl Tensors {
    fn new(problem: &Problem, prefix: &str) -> Tensors {
        let device = Device::emulator();
        let make = |shape: &[usize], x: f32, label: &str| {
            Tensor::full(&device, shape, bf16::from_f32(x))
                .and_then(|t| t.with_label(&format!("{prefix}{label}")))
                .unwrap()
        };
        let lse_shape = [problem.batch, problem.heads, problem.seqlen_q];
        Tensors {
            q: make(&problem.q_shape(), 0.5, "q"),
            k: make(&problem.k_shape(), 0.25, "k"),
            v: make(&problem.k_shape(), 1.0, "v"),
            out: make(&problem.q_shape(), 0.0, "out"),
            lse: Tensor::full(&device, &lse_shape, 0.0f32)
                .and_then(|t| t.with_label(&format!("{prefix}lse")))
                .unwrap(),
        }
    }

    /// Runs `kernel` once under a recorder; returns its traffic (one launch).
    fn record(&mut self, kernel: Kernel, opts: &AttentionOptions) -> Traffic {
        let recorder = TrafficRecorder::start().unwrap();
        attention_into(
            kernel,
            &self.q,
            &self.k,
            &self.v,
            &mut self.out,
            Some(&mut self.lse),
            opts,
        )
        .unwrap();
        let traffic = recorder.finish().unwrap();
        assert_eq!(traffic.launches.len(), 1, "{traffic:?}");
        traffic
    }
}

fn options(causal: bool, window: Option<(i32, i32)>) -> AttentionOptions {
    AttentionOptions {
        causal,
        window,
        return_lse: true,
        ..Default::default()
    }
}

/// Checks the traffic every attention kernel has whatever its tiling: q's rows read (`q_reads`
/// times each), out and LSE written exactly once, nothing else written, nothing of the outputs
/// read, and no allocation but the five touched.
fn assert_outputs_once(traffic: &Traffic, problem: &Problem, q_reads: u64) {
    let rows = problem.query_rows();
    assert_eq!(
        traffic.bytes_read("q"),
        q_reads * rows * problem.row_bytes()
    );
    assert_eq!(traffic.bytes_written("out"), rows * problem.row_bytes());
    assert_eq!(traffic.bytes_written("lse"), rows * LSE_BYTES);
    assert_eq!(traffic.bytes_read("out") + traffic.bytes_read("lse"), 0);
    assert_eq!(
        traffic.total_written(),
        rows * (problem.row_bytes() + LSE_BYTES)
    );
    let labels: BTreeSet<&str> = traffic.launches[0]
        .allocations
        .iter()
        .map(|a| a.label.as_str())
        .collect();
    assert_eq!(labels, BTreeSet::from(["k", "lse", "out", "q", "v"]));
}

// ---------------------------------------------------------------------------------------------
// 1. Exact counts on kernels whose every access is known.
// ---------------------------------------------------------------------------------------------

/// Safe wrappers over the C traffic calls: per-thread state, and out pointers made from
/// references (`None`: NULL, which the accessors refuse).
fn traffic_begin() -> Status {
    // SAFETY: per-thread state; no preconditions.
    unsafe { ffi::cuattn_emu_traffic_begin() }
}

fn traffic_end() -> Status {
    // SAFETY: per-thread state; no preconditions.
    unsafe { ffi::cuattn_emu_traffic_end() }
}

fn launch_count(count: Option<&mut u64>) -> Status {
    let count = count.map_or(std::ptr::null_mut(), |c| c as *mut u64);
    // SAFETY: `count` is null or a valid out pointer.
    unsafe { ffi::cuattn_emu_traffic_launch_count(count) }
}

/// Launch `launch`'s kernel name (copied) and entry count.
fn get_launch(launch: u64) -> (Status, String, u64) {
    let mut name = std::ptr::null();
    let mut entries = 0;
    // SAFETY: valid out pointers.
    let status = unsafe { ffi::cuattn_emu_traffic_get_launch(launch, &mut name, &mut entries) };
    let name = if name.is_null() {
        String::new()
    } else {
        // SAFETY: the accessor handed out a NUL-terminated name valid until the next begin.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    (status, name, entries)
}

fn get_entry(launch: u64, entry: u64, out: Option<&mut ffi::cuattn_emu_traffic_entry>) -> Status {
    let out = out.map_or(std::ptr::null_mut(), |e| {
        e as *mut ffi::cuattn_emu_traffic_entry
    });
    // SAFETY: `out` is null or a valid out pointer.
    unsafe { ffi::cuattn_emu_traffic_get_entry(launch, entry, out) }
}

/// NEIGHBOR_SUM over int32 [2][n]: thread i < n reads x[i] and x[min(i + 1, n - 1)] of row 1 and
/// writes y[i] of row 0, so the launch reads 8n bytes and writes 4n, all in the one allocation,
/// read through the C accessors.
#[test]
fn the_c_api_counts_each_load_and_store_of_a_simple_kernel() {
    let n = 100; // two blocks of 64 threads, the second with 28 past n
    let mut buf = vec![3i32; 2 * n];
    let label = c"neighbor sum buffer";
    // SAFETY: registers the vector's 8n bytes, which outlive the launch; the label is copied.
    let status = unsafe {
        ffi::cuattn_emu_register_allocation(buf.as_ptr().cast(), 8 * n as u64, label.as_ptr())
    };
    assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
    assert_eq!(traffic_begin(), Status::CUATTN_OK);
    // SAFETY: buf holds the case's int32 [2][n]; the emulator ignores the stream.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_memcheck_test(
            ffi::cuattn_memcheck_test_case::CUATTN_MEMCHECK_TEST_NEIGHBOR_SUM.0 as i32,
            buf.as_mut_ptr().cast(),
            n as i64,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
    assert_eq!(traffic_end(), Status::CUATTN_OK);
    assert_eq!(buf[0], 6);

    let mut launches = 0;
    assert_eq!(launch_count(Some(&mut launches)), Status::CUATTN_OK);
    assert_eq!(launches, 1);
    let (status, name, entries) = get_launch(0);
    assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
    assert_eq!(name, "memcheck_test_neighbor_sum");
    assert_eq!(entries, 1);
    let mut entry = ffi::cuattn_emu_traffic_entry {
        label: std::ptr::null(),
        address: 0,
        allocation_bytes: 0,
        bytes_read: 0,
        bytes_written: 0,
    };
    assert_eq!(
        get_entry(0, 0, Some(&mut entry)),
        Status::CUATTN_OK,
        "{}",
        last_error()
    );
    // SAFETY: the accessor handed out a NUL-terminated label valid until the next begin.
    assert_eq!(unsafe { CStr::from_ptr(entry.label) }, label);
    assert_eq!(entry.address, buf.as_ptr() as u64);
    assert_eq!(entry.allocation_bytes, 8 * n as u64);
    assert_eq!(entry.bytes_read, 8 * n as u64);
    assert_eq!(entry.bytes_written, 4 * n as u64);

    // SAFETY: forgets the range before the vector is freed.
    let status = unsafe { ffi::cuattn_emu_unregister_allocation(buf.as_ptr().cast()) };
    assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
}

/// The naive kernel (one warp a query row and head) reads its q row once and each key it sees
/// once from K (the score) and once from V (P V), and writes its out row and LSE once; exact under
/// GQA, a causal mask with a window, odd lengths and a head dim that is not a multiple of 32.
#[test]
fn the_naive_kernel_reads_each_visible_key_once_per_query_row() {
    let problem = Problem {
        batch: 2,
        seqlen_q: 37,
        seqlen_k: 53,
        heads: 4,
        kv_heads: 2,
        head_dim: 40,
    };
    let mut tensors = Tensors::new(&problem, "");
    for (causal, window) in [
        (false, None),
        (true, None),
        (true, Some((9, -1))),
        (false, Some((5, 3))),
    ] {
        let opts = options(causal, window);
        let traffic = tensors.record(Kernel::Naive, &opts);
        assert_eq!(traffic.launches[0].kernel, "attention_naive");
        let (left, right) = opts.effective_window();
        let (sq, sk) = (problem.seqlen_q as i64, problem.seqlen_k as i64);
        let keys_per_head: i64 = (0..sq)
            .map(|row| {
                let (begin, end) = visible(row, sq, sk, i64::from(left), i64::from(right));
                end - begin
            })
            .sum();
        let kv_bytes =
            (problem.batch * problem.heads) as u64 * keys_per_head as u64 * problem.row_bytes();
        assert_eq!(
            traffic.bytes_read("k"),
            kv_bytes,
            "causal {causal} window {window:?}"
        );
        assert_eq!(
            traffic.bytes_read("v"),
            kv_bytes,
            "causal {causal} window {window:?}"
        );
        assert_eq!(traffic.bytes_written("k") + traffic.bytes_written("v"), 0);
        assert_outputs_once(&traffic, &problem, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 2, 3. The flash kernel's K/V reads under masks, derived from its tiles.
// ---------------------------------------------------------------------------------------------

/// Key rows of K (or of V) the flash kernel loads for one (batch, head), derived from its tiling
/// (csrc/kernels/flash_fwd.cuh): CTA c takes query rows [c * block_rows, (c + 1) * block_rows),
/// and loads the key tiles of block_keys keys that start at the first key any of its rows sees
/// (`cta_keys`: the first row's first key) and cover up to the last row's last key, each tile's
/// rows with cp.async; rows past the sequence are zero-filled, reading nothing. So a CTA whose
/// rows see keys [begin, end) reads min(ceil((end - begin) / block_keys) * block_keys,
/// seqlen_k - begin) key rows, and a CTA whose rows see none reads none.
fn flash_key_rows(
    problem: &Problem,
    block_rows: usize,
    block_keys: usize,
    left: i64,
    right: i64,
) -> u64 {
    let (sq, sk) = (problem.seqlen_q as i64, problem.seqlen_k as i64);
    let (bm, bn) = (block_rows as i64, block_keys as i64);
    let mut rows = 0;
    for row0 in (0..sq).step_by(block_rows) {
        let last = (row0 + bm).min(sq) - 1;
        let begin = visible(row0, sq, sk, left, right).0;
        let end = visible(last, sq, sk, left, right).1;
        if end > begin {
            let tiles = (end - begin + bn - 1) / bn;
            rows += (tiles * bn).min(sk - begin);
        }
    }
    rows as u64
}

/// The flash launch's plan (CTA rows, key tile) on the emulator for `problem` under `opts`.
fn plan(problem: &Problem, opts: &AttentionOptions) -> (usize, usize) {
    let params =
        AttentionParams::dense_shape::<bf16>(&problem.q_shape(), &problem.k_shape(), opts).unwrap();
    let plan = flash_plan(&Device::emulator(), &params).unwrap();
    (plan.block_rows, plan.block_keys)
}

/// Runs flash on `tensors` under `opts`; checks K and V against the tiling and the outputs;
/// returns the K bytes read.
fn flash_kv_bytes(tensors: &mut Tensors, problem: &Problem, opts: &AttentionOptions) -> u64 {
    let (block_rows, block_keys) = plan(problem, opts);
    let traffic = tensors.record(Kernel::Flash, opts);
    assert_eq!(traffic.launches[0].kernel, "attention_flash");
    let (left, right) = opts.effective_window();
    let key_rows = flash_key_rows(problem, block_rows, block_keys, left.into(), right.into());
    let heads = (problem.batch * problem.heads) as u64;
    let want = heads * key_rows * problem.row_bytes();
    let what = format!("{opts:?}, {block_rows} rows a CTA, {block_keys}-key tiles");
    assert_eq!(traffic.bytes_read("k"), want, "{what}");
    assert_eq!(traffic.bytes_read("v"), want, "{what}");
    assert_eq!(traffic.bytes_written("k") + traffic.bytes_written("v"), 0);
    // Each CTA stages its query rows in shared memory once.
    assert_outputs_once(&traffic, problem, 1);
    want
}

/// bf16, one head, seqlen 1024, head dim 64: the hd64 row of the tile table is four warps of two
/// m16 tiles (128 query rows a CTA) and 64-key tiles, so n = 8 CTAs. Unmasked, each loads all 16
/// key tiles: 8 * 1024 key rows. Causal (square), CTA c's rows see keys [0, 128 (c + 1)): 2 (c + 1)
/// tiles, 128 * (1 + ... + 8) = 4608 rows, so causal reads (n + 1) / 2n = 9/16 of the unmasked
/// K/V bytes exactly (the diagonal tiles are loaded whole).
#[test]
fn causal_flash_reads_about_half_the_kv_of_unmasked() {
    let problem = Problem::square(1024, 64);
    let (block_rows, block_keys) = plan(&problem, &options(true, None));
    assert_eq!(
        (block_rows, block_keys),
        (128, 64),
        "the hd64 row of the tile table"
    );
    let mut tensors = Tensors::new(&problem, "");
    let full = flash_kv_bytes(&mut tensors, &problem, &options(false, None));
    assert_eq!(full, 8 * 1024 * problem.row_bytes());
    let causal = flash_kv_bytes(&mut tensors, &problem, &options(true, None));
    assert_eq!(causal, 4608 * problem.row_bytes());
    let n = (problem.seqlen_q / block_rows) as u64;
    assert_eq!(
        causal * 2 * n,
        full * (n + 1),
        "causal / full = (n + 1) / 2n"
    );
}

/// A sliding window of w keys back (window_left = w, window_right = 0, with or without the causal
/// flag) on the same shape: CTA c's rows see keys [128 c - w, 128 (c + 1)) clipped at 0, so each
/// CTA loads 128 + w keys rounded up to whole 64-key tiles (its first tile starts at its first
/// key, not on a multiple of 64), and the full run's 1024: about (w + 128) / 1024 of its K/V bytes,
/// under (w + 128 + 63) / 1024. Exact from flash_key_rows, and within that bound, for w a multiple
/// of the key tile (256), one that is not (100, the last CTA's last tile clipped at the sequence
/// end) and w = 0 (each CTA its own diagonal block).
#[test]
fn sliding_window_flash_reads_the_window_plus_a_tile_of_kv() {
    let problem = Problem::square(1024, 64);
    let mut tensors = Tensors::new(&problem, "");
    let full = flash_kv_bytes(&mut tensors, &problem, &options(false, None));
    let (block_rows, block_keys) = plan(&problem, &options(false, None));
    let seqlen = problem.seqlen_k as f64;
    for (w, opts) in [
        (256, options(true, Some((256, -1)))),
        (100, options(false, Some((100, 0)))),
        (0, options(false, Some((0, 0)))),
    ] {
        let windowed = flash_kv_bytes(&mut tensors, &problem, &opts);
        let ratio = windowed as f64 / full as f64;
        let upper = (w + block_rows + block_keys - 1) as f64 / seqlen;
        // The first CTAs' windows are clipped at key 0, so they read less than w + 128 keys.
        let lower = (w + block_rows) as f64 / seqlen * 0.75;
        assert!(
            lower <= ratio && ratio <= upper,
            "w = {w}: windowed / full = {ratio} outside [{lower}, {upper}]"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Recording is off by default, per thread, and scoped.
// ---------------------------------------------------------------------------------------------

fn recording() -> bool {
    // SAFETY: reads a per-thread flag.
    unsafe { ffi::cuattn_emu_traffic_recording() != 0 }
}

#[test]
fn launches_outside_a_recording_are_not_recorded() {
    let problem = Problem::square(40, 32);
    let mut tensors = Tensors::new(&problem, "");
    assert!(!recording(), "a fresh thread records nothing");
    let opts = options(true, None);
    attention_into(
        Kernel::Naive,
        &tensors.q,
        &tensors.k,
        &tensors.v,
        &mut tensors.out,
        Some(&mut tensors.lse),
        &opts,
    )
    .unwrap();
    let recorder = TrafficRecorder::start().unwrap();
    assert!(recording());
    let traffic = recorder.finish().unwrap();
    assert!(!recording());
    assert_eq!(
        traffic,
        Traffic::default(),
        "the launch before start is not in it"
    );
    // One after finish is in no recording either: the next starts empty.
    tensors.record(Kernel::Naive, &opts);
    let traffic = TrafficRecorder::start().unwrap().finish().unwrap();
    assert!(traffic.launches.is_empty());
}

/// Two threads record at once, each launching on its own tensors between two barriers, so that
/// their launches overlap: each recording holds its own launch only.
#[test]
fn recordings_of_two_threads_do_not_mix() {
    let problem = Problem::square(64, 64);
    let barrier = Barrier::new(2);
    let traffics: Vec<Traffic> = std::thread::scope(|scope| {
        let threads: Vec<_> = ["a.", "b."]
            .into_iter()
            .map(|prefix| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut t = Tensors::new(&problem, prefix);
                    let recorder = TrafficRecorder::start().unwrap();
                    barrier.wait();
                    attention_into(
                        Kernel::Flash,
                        &t.q,
                        &t.k,
                        &t.v,
                        &mut t.out,
                        Some(&mut t.lse),
                        &options(false, None),
                    )
                    .unwrap();
                    barrier.wait();
                    recorder.finish().unwrap()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (traffic, prefix) in traffics.iter().zip(["a.", "b."]) {
        assert_eq!(traffic.launches.len(), 1, "{prefix}: {traffic:?}");
        for a in &traffic.launches[0].allocations {
            assert!(a.label.starts_with(prefix), "{prefix}: {traffic:?}");
        }
        let q_bytes = problem.query_rows() * problem.row_bytes();
        assert_eq!(traffic.bytes_read(&format!("{prefix}q")), q_bytes);
    }
    assert!(!recording(), "the test's own thread recorded nothing");
}

#[test]
fn a_recorder_stops_recording_when_dropped_even_by_a_panic() {
    let recorder = TrafficRecorder::start().unwrap();
    let nested = TrafficRecorder::start().unwrap_err().to_string();
    assert!(
        nested.contains("TrafficRecorder::start") && nested.contains("do not nest"),
        "{nested}"
    );
    drop(recorder);
    assert!(!recording());
    let panicked = std::panic::catch_unwind(|| {
        let _recorder = TrafficRecorder::start().unwrap();
        assert!(recording());
        panic!("a failing test");
    });
    assert!(panicked.is_err());
    assert!(!recording(), "the unwinding drop closed the recording");
    assert!(TrafficRecorder::start().unwrap().finish().is_ok());
}

/// Counting needs the checker's hooks: a recording checks its launches even where the checker is
/// off, and counts the same bytes.
#[test]
fn recording_counts_with_the_memory_checker_turned_off() {
    let problem = Problem::square(48, 64);
    let mut tensors = Tensors::new(&problem, "");
    let opts = options(false, None);
    let checked = tensors.record(Kernel::MmaSimple, &opts);
    let _off = MemcheckSetting::new(false);
    // SAFETY: reads a per-thread setting.
    assert_eq!(unsafe { ffi::cuattn_emu_memcheck_enabled() }, 0);
    let recorder = TrafficRecorder::start().unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { ffi::cuattn_emu_memcheck_enabled() }, 1);
    attention_into(
        Kernel::MmaSimple,
        &tensors.q,
        &tensors.k,
        &tensors.v,
        &mut tensors.out,
        Some(&mut tensors.lse),
        &opts,
    )
    .unwrap();
    let unchecked = recorder.finish().unwrap();
    assert_eq!(unchecked, checked);
    assert!(checked.bytes_read("k") >= (problem.seqlen_k as u64) * problem.row_bytes());
}

// ---------------------------------------------------------------------------------------------
// The C API's refusals, and `cuattn check`'s traffic.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_c_api_refuses_calls_out_of_order_naming_the_constraint() {
    fn refused(status: Status, wants: &str) {
        assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT);
        let message = last_error();
        assert!(message.contains(wants), "{message}");
    }
    // A fresh thread: no recording opened or closed on it yet.
    std::thread::spawn(|| {
        let mut count = 0;
        refused(launch_count(Some(&mut count)), "has closed no recording");
        refused(traffic_end(), "has no recording open");
        assert_eq!(traffic_begin(), Status::CUATTN_OK);
        refused(traffic_begin(), "has a recording open already");
        refused(launch_count(Some(&mut count)), "is still open");
        assert_eq!(traffic_end(), Status::CUATTN_OK);
        refused(launch_count(None), "launches is NULL");
        assert_eq!(launch_count(Some(&mut count)), Status::CUATTN_OK);
        assert_eq!(count, 0);
        refused(
            get_launch(0).0,
            "launch = 0: the recording holds 0 launches",
        );
        refused(get_entry(0, 0, None), "out is NULL");
        // SAFETY: relabeling only looks the address up (and refuses it); the label is copied.
        let status =
            unsafe { ffi::cuattn_emu_relabel_allocation(0x1000 as *const c_void, c"x".as_ptr()) };
        refused(status, "is not the start of a registered allocation");
    })
    .join()
    .unwrap();
}

/// `cuattn check --json --traffic` runs cases through `run_case_with`: a flash case's JSON holds
/// the launch's traffic under the check's labels, and a packed-QKV case counts q, k and v as the
/// one buffer they share.
#[test]
fn check_cases_report_their_launch_traffic() {
    let device = Device::emulator();
    let options = CheckOptions {
        traffic: true,
        ..Default::default()
    };
    let case = AttentionCase::dense(1, 70, 70, 2, 1, 64, DType::BF16).causal();
    let result = run_case_with(&device, Kernel::Flash, &case, &options);
    assert!(result.passed(), "{result}");
    let traffic = result.traffic.as_ref().expect("traffic was asked for");
    let row_bytes = 64 * BF16_BYTES;
    assert_eq!(traffic.bytes_read("q"), 70 * 2 * row_bytes);
    assert_eq!(traffic.bytes_written("out"), 70 * 2 * row_bytes);
    assert_eq!(traffic.bytes_written("lse"), 70 * 2 * LSE_BYTES);
    let json = result.to_json();
    assert!(
        json.contains("\"traffic\":[{\"kernel\":\"attention_flash\",\"allocations\":[")
            && json.contains(
                "{\"label\":\"lse\",\"bytes\":560,\"bytes_read\":0,\"bytes_written\":560}"
            ),
        "{json}"
    );

    let packed = AttentionCase::dense(1, 33, 33, 2, 1, 64, DType::BF16).layout(Layout::PackedQkv);
    let result = run_case_with(&device, Kernel::Naive, &packed, &options);
    assert!(result.passed(), "{result}");
    let traffic = result.traffic.unwrap();
    assert_eq!(traffic.bytes_read("q"), 0);
    assert!(traffic.bytes_read("qkv") > 0);

    let plain = run_case_with(&device, Kernel::Naive, &packed, &CheckOptions::default());
    assert!(plain.traffic.is_none() && !plain.to_json().contains("traffic"));
}

/// The flash tile table is an option of the call, not of the thread: `CheckOptions::flash_tiles`
/// reaches the launch, whose K reads follow the table's CTA rows. At hd128 a compact CTA holds 128
/// query rows and a wide one 256, and each reads every key of a non-causal problem once.
#[test]
fn the_flash_tiles_option_reaches_the_launch() {
    let device = Device::emulator();
    let (seqlen, head_dim) = (300, 128);
    let case = AttentionCase::dense(1, seqlen, seqlen, 1, 1, head_dim, DType::BF16);
    let k_read = |tiles: FlashTiles| {
        let options = CheckOptions {
            traffic: true,
            flash_tiles: tiles,
        };
        let result = run_case_with(&device, Kernel::Flash, &case, &options);
        assert!(result.passed(), "{tiles:?}: {result}");
        result
            .traffic
            .expect("traffic was asked for")
            .bytes_read("k")
    };
    let key_bytes = (seqlen * head_dim) as u64 * BF16_BYTES;
    // ceil(300 / 128) = 3 compact CTAs, ceil(300 / 256) = 2 wide ones.
    assert_eq!(k_read(FlashTiles::Compact), 3 * key_bytes);
    assert_eq!(k_read(FlashTiles::Wide), 2 * key_bytes);
}

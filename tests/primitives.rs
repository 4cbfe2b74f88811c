//! The warp-level primitives of csrc/arch (mma, ldmatrix, cp.async, vector access and packing,
//! ex2, reductions, swizzle) through the kernels of csrc/kernels/primitives_test.cu, on the
//! emulator and on the GPU when one is present: every result is recomputed here from the PTX
//! ISA's layout tables on random data with fixed seeds. Data movement must match bit for bit; mma
//! within its accumulation-order tolerance; ex2.approx within the ISA's bound. Running the same
//! tests on both devices is what proves the emulator faithful. Planted bugs must show (a missing
//! .trans named by lane and register, a read before cp.async.wait_group reading poison) and
//! planted faults must stop the emulator with a message naming the thread.

mod common;

use common::last_error;

use std::alloc::Layout;
use std::ffi::{c_void, CString};

use cuattn::ffi::{self, cuattn_primitive_test_case as Case, cuattn_status as Status};
use cuattn::Device;
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WARP: usize = 32;
/// What `out` holds before a launch, so that anything left unwritten shows up.
const POISON: u8 = 0xa5;
/// The emulator's poison for shared memory a cp.async has yet to write.
const INFLIGHT: u8 = 0xff;
/// What the cp.async kernels write to shared memory before their copies.
const OLD: u8 = 0x5a;
/// Alignment of device allocations (cudaMalloc gives at least 256 bytes).
const DEVICE_ALIGN: usize = 256;

// ---------------------------------------------------------------------------------------------
// Running a case.
// ---------------------------------------------------------------------------------------------

/// Host memory for the emulator's kernels: aligned like a device allocation and registered with
/// the emulator's memory checker for its life.
struct EmuBuffer {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
}

impl EmuBuffer {
    fn new(bytes: &[u8], label: &str) -> EmuBuffer {
        let layout = Layout::from_size_align(bytes.len().max(1), DEVICE_ALIGN).unwrap();
        // SAFETY: the layout has a nonzero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null(), "allocating {} bytes", bytes.len());
        // SAFETY: ptr is a fresh allocation of at least bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        let label = CString::new(label).unwrap();
        // SAFETY: [ptr, ptr + len) is this allocation; the label is copied.
        let status = unsafe {
            ffi::cuattn_emu_register_allocation(ptr.cast(), bytes.len() as u64, label.as_ptr())
        };
        assert_eq!(status, Status::CUATTN_OK, "{}", last_error());
        EmuBuffer {
            ptr,
            len: bytes.len(),
            layout,
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        // SAFETY: ptr holds len initialized bytes and no launch is running (they are synchronous).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec()
    }
}

impl Drop for EmuBuffer {
    fn drop(&mut self) {
        // SAFETY: ptr starts the allocation registered in `new`, allocated with this layout.
        unsafe {
            ffi::cuattn_emu_unregister_allocation(self.ptr.cast());
            std::alloc::dealloc(self.ptr, self.layout);
        }
    }
}

/// The output bytes of a launch, or its status and cuattn_last_error().
type Outcome = Result<Vec<u8>, (Status, String)>;

/// Runs `case` on `device` with `input` (none if empty) into `out_bytes` bytes poisoned first.
fn run(device: &Device, case: Case, input: &[u8], out_bytes: usize) -> Outcome {
    match device {
        Device::Emulator => run_emulator(case, input, out_bytes),
        Device::Cuda(stream) => run_gpu(stream, case, input, out_bytes),
    }
}

fn run_emulator(case: Case, input: &[u8], out_bytes: usize) -> Outcome {
    let input = (!input.is_empty()).then(|| EmuBuffer::new(input, "primitive test in"));
    let out = (out_bytes > 0).then(|| EmuBuffer::new(&vec![POISON; out_bytes], "out"));
    let in_ptr = input
        .as_ref()
        .map_or(std::ptr::null(), |b| b.ptr.cast_const());
    let out_ptr = out.as_ref().map_or(std::ptr::null_mut(), |b| b.ptr);
    // SAFETY: in and out are null or registered host buffers of their sizes, alive for this
    // synchronous call; the stream is ignored by the emulator.
    let status = unsafe {
        ffi::cuattn_emu_raw_launch_primitive_test(
            case.0 as i32,
            in_ptr.cast::<c_void>(),
            out_ptr.cast::<c_void>(),
            out_bytes as i64,
            std::ptr::null_mut(),
        )
    };
    if status != Status::CUATTN_OK {
        return Err((status, last_error()));
    }
    Ok(out.map_or_else(Vec::new, |b| b.to_vec()))
}

#[cfg(cuattn_cuda)]
fn run_gpu(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    case: Case,
    input: &[u8],
    out_bytes: usize,
) -> Outcome {
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    let cuda_error =
        |e: cudarc::driver::DriverError| (Status::CUATTN_ERROR_LAUNCH_FAILED, e.to_string());
    let device_in = match input.is_empty() {
        true => None,
        false => Some(stream.clone_htod(input).map_err(cuda_error)?),
    };
    let mut device_out = stream
        .clone_htod(&vec![POISON; out_bytes.max(1)])
        .map_err(cuda_error)?;
    stream.context().bind_to_thread().map_err(cuda_error)?;
    let status = {
        // The guards order the buffers' later use after this launch on the stream.
        let in_ptr = device_in.as_ref().map(|b| b.device_ptr(stream));
        let (out_ptr, _out_guard) = device_out.device_ptr_mut(stream);
        // SAFETY: in and out are device buffers of this stream's context of the sizes the case
        // reads and writes; the launch is asynchronous and synchronized below.
        unsafe {
            ffi::cuattn_raw_launch_primitive_test(
                case.0 as i32,
                in_ptr.as_ref().map_or(0, |p| p.0) as *const c_void,
                out_ptr as *mut c_void,
                out_bytes as i64,
                stream.cu_stream().cast(),
            )
        }
    };
    if status != Status::CUATTN_OK {
        return Err((status, last_error()));
    }
    stream.synchronize().map_err(cuda_error)?;
    let mut out = stream.clone_dtoh(&device_out).map_err(cuda_error)?;
    out.truncate(out_bytes);
    Ok(out)
}

#[cfg(not(cuattn_cuda))]
fn run_gpu(
    _stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    _case: Case,
    _input: &[u8],
    _out_bytes: usize,
) -> Outcome {
    unreachable!("common::devices() lists a GPU only when this build has CUDA kernels")
}

/// Runs `case` on `device`, expecting success.
fn run_ok(device: &Device, case: Case, input: &[u8], out_bytes: usize) -> Vec<u8> {
    run(device, case, input, out_bytes).unwrap_or_else(|(status, message)| {
        panic!("{case:?} on {}: {status:?}: {message}", device.name())
    })
}

// ---------------------------------------------------------------------------------------------
// Bytes, 16-bit floats and comparisons.
// ---------------------------------------------------------------------------------------------

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
fn f32s(bytes: &[u8]) -> Vec<f32> {
    u32s(bytes).into_iter().map(f32::from_bits).collect()
}
fn i32s(bytes: &[u8]) -> Vec<i32> {
    u32s(bytes).into_iter().map(|x| x as i32).collect()
}
fn push_u16s(out: &mut Vec<u8>, values: &[u16]) {
    values.iter().for_each(|v| out.extend(v.to_le_bytes()));
}
fn push_u32s(out: &mut Vec<u8>, values: &[u32]) {
    values.iter().for_each(|v| out.extend(v.to_le_bytes()));
}
fn push_f32s(out: &mut Vec<u8>, values: &[f32]) {
    values.iter().for_each(|v| out.extend(v.to_le_bytes()));
}

/// The 16-bit element types of mma.
#[derive(Clone, Copy, Debug)]
enum Half16 {
    Bf16,
    F16,
}

impl Half16 {
    /// Rounds to nearest even, as the kernels' conversions do.
    fn bits(self, x: f32) -> u16 {
        match self {
            Half16::Bf16 => bf16::from_f32(x).to_bits(),
            Half16::F16 => f16::from_f32(x).to_bits(),
        }
    }
    fn value(self, bits: u16) -> f64 {
        match self {
            Half16::Bf16 => f64::from(bf16::from_bits(bits).to_f32()),
            Half16::F16 => f64::from(f16::from_bits(bits).to_f32()),
        }
    }
}

/// A 16x16 or 16x8 tile of 16-bit values of uniform random numbers in [-range, range).
fn random_tile(rng: &mut StdRng, kind: Half16, rows: usize, cols: usize, range: f32) -> Vec<u16> {
    (0..rows * cols)
        .map(|_| kind.bits(rng.random_range(-range..range)))
        .collect()
}

fn pair(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | u32::from(hi) << 16
}

/// Whether `got` is within `tol` of `want` (NaN never is).
fn within(got: f32, want: f64, tol: f64) -> bool {
    (f64::from(got) - want).abs() <= tol
}

/// Compares floats within `tol` (NaN never is) and names up to 8 mismatches by `place(i)`.
fn compare_floats(
    what: &str,
    got: &[f32],
    want: &[f64],
    tol: &[f64],
    place: impl Fn(usize) -> String,
) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| !within(got[i], want[i], tol[i]))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let first: Vec<String> = bad
        .iter()
        .take(8)
        .map(|&i| {
            format!(
                "{}: expected {} got {} (tolerance {:.2e})",
                place(i),
                want[i],
                got[i],
                tol[i]
            )
        })
        .collect();
    Err(format!(
        "{what}: {} of {} values differ; {}",
        bad.len(),
        got.len(),
        first.join("; ")
    ))
}

/// Compares bit patterns exactly and names up to 8 mismatches by `place(i)`.
fn compare_bits<T: PartialEq + std::fmt::LowerHex>(
    what: &str,
    got: &[T],
    want: &[T],
    place: impl Fn(usize) -> String,
) -> Result<(), String> {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let first: Vec<String> = bad
        .iter()
        .take(8)
        .map(|&i| format!("{}: expected {:#x} got {:#x}", place(i), want[i], got[i]))
        .collect();
    Err(format!(
        "{what}: {} of {} values differ; {}",
        bad.len(),
        got.len(),
        first.join("; ")
    ))
}

/// Runs `check` on every device, printing what passed; fails listing every failure.
fn on_every_device(what: &str, check: impl Fn(&Device) -> Result<(), String>) {
    let mut failures = Vec::new();
    for device in common::devices() {
        match check(&device) {
            Ok(()) => println!("{what} on {}: ok", device.name()),
            Err(e) => failures.push(format!("{what} on {}: {e}", device.name())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// PTX ISA layout tables. "Matrix Fragments for mma.m16n8k16 with floating point type": with
// group = lane / 4 and q = lane % 4, element `half` (0 in the low 16 bits) of register `reg`.
// ---------------------------------------------------------------------------------------------

/// (row, column) of A (16x16) held by element `half` of a[reg] in `lane`.
fn a_position(lane: usize, reg: usize, half: usize) -> (usize, usize) {
    (
        lane / 4 + 8 * (reg % 2),
        2 * (lane % 4) + half + 8 * (reg / 2),
    )
}

/// (k, n) of B (16x8) held by element `half` of b[reg] in `lane`.
fn b_position(lane: usize, reg: usize, half: usize) -> (usize, usize) {
    (2 * (lane % 4) + half + 8 * reg, lane / 4)
}

/// (row, column) of C and D (16x8) held by c[i] in `lane`.
fn c_position(lane: usize, i: usize) -> (usize, usize) {
    (lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2)
}

// ---------------------------------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32
// ---------------------------------------------------------------------------------------------

const MMA_WARPS: usize = 8;
/// The accumulation-order tolerance (csrc/arch/mma.cuh): 2^-18 of |C| + sum |A B|.
const MMA_RELATIVE_TOLERANCE: f64 = 1.0 / (1u64 << 18) as f64;

fn mma_matches_isa_fragment_layouts(kind: Half16, case: Case, seed: u64) {
    const M: usize = 16;
    const N: usize = 8;
    const K: usize = 16;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut a_regs, mut b_regs, mut c_regs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut want, mut tol) = (Vec::new(), Vec::new());
    for _ in 0..MMA_WARPS {
        let a = random_tile(&mut rng, kind, M, K, 2.0); // [m][k]
        let b = random_tile(&mut rng, kind, K, N, 2.0); // [k][n]
        let c: Vec<f32> = (0..M * N).map(|_| rng.random_range(-4.0..4.0)).collect();
        for lane in 0..WARP {
            for reg in 0..4 {
                let at = |half| a_position(lane, reg, half);
                a_regs.push(pair(a[at(0).0 * K + at(0).1], a[at(1).0 * K + at(1).1]));
            }
            for reg in 0..2 {
                let at = |half| b_position(lane, reg, half);
                b_regs.push(pair(b[at(0).0 * N + at(0).1], b[at(1).0 * N + at(1).1]));
            }
            for i in 0..4 {
                let (row, col) = c_position(lane, i);
                c_regs.push(c[row * N + col]);
                let products =
                    (0..K).map(|k| kind.value(a[row * K + k]) * kind.value(b[k * N + col]));
                let exact = f64::from(c[row * N + col]) + products.clone().sum::<f64>();
                let scale = f64::from(c[row * N + col].abs()) + products.map(f64::abs).sum::<f64>();
                want.push(exact);
                tol.push(MMA_RELATIVE_TOLERANCE * scale);
            }
        }
    }
    let mut input = Vec::new();
    push_u32s(&mut input, &a_regs);
    push_u32s(&mut input, &b_regs);
    push_f32s(&mut input, &c_regs);
    let values = MMA_WARPS * WARP * 4;
    println!("{kind:?}: {MMA_WARPS} warps x 16x8x16, seed {seed}");
    on_every_device(&format!("mma {kind:?}"), |device| {
        let out = f32s(&run_ok(device, case, &input, 2 * 4 * values));
        let (d, in_place) = out.split_at(values);
        let place = |i: usize| {
            let (row, col) = c_position(i / 4 % WARP, i % 4);
            format!(
                "warp {} lane {} d[{}] (D[{row}][{col}])",
                i / 4 / WARP,
                i / 4 % WARP,
                i % 4
            )
        };
        compare_floats("d = a * b + c", d, &want, &tol, place)?;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        compare_bits(
            "in place (d aliasing c) vs separate d",
            &bits(in_place),
            &bits(d),
            place,
        )
    });
}

#[test]
fn mma_bf16_matches_the_isa_fragment_layouts_within_accumulation_tolerance() {
    mma_matches_isa_fragment_layouts(Half16::Bf16, Case::CUATTN_PRIMITIVE_TEST_MMA_BF16, 11);
}

#[test]
fn mma_f16_matches_the_isa_fragment_layouts_within_accumulation_tolerance() {
    mma_matches_isa_fragment_layouts(Half16::F16, Case::CUATTN_PRIMITIVE_TEST_MMA_F16, 12);
}

// ---------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16
// ---------------------------------------------------------------------------------------------

const LDM_ROWS: usize = 64;
/// (name, matrices, .trans) of each variant the kernel runs, in order.
const LDM_VARIANTS: [(&str, usize, bool); 7] = [
    ("x1", 1, false),
    ("x2", 2, false),
    ("x4", 4, false),
    ("x1.trans", 1, true),
    ("x2.trans", 2, true),
    ("x4.trans", 4, true),
    ("x4 (static __shared__)", 4, false),
];

/// Register j of `lane` for an ldmatrix whose lane l passed row `row_of_lane[l]` of `tile`
/// ([64][8] u16): matrix j is made of the rows of lanes 8j..8j+7; without .trans lane l gets
/// M[l/4][2(l%4)], M[l/4][2(l%4)+1]; with .trans M[2(l%4)][l/4], M[2(l%4)+1][l/4].
fn ldmatrix_register(tile: &[u16], row_of_lane: &[u32], lane: usize, j: usize, trans: bool) -> u32 {
    let m = |row: usize, col: usize| tile[row_of_lane[8 * j + row] as usize * 8 + col];
    let (group, q) = (lane / 4, lane % 4);
    if trans {
        pair(m(2 * q, group), m(2 * q + 1, group))
    } else {
        pair(m(group, 2 * q), m(group, 2 * q + 1))
    }
}

#[test]
fn ldmatrix_every_variant_delivers_the_isa_fragments_bit_exact() {
    let mut rng = StdRng::seed_from_u64(21);
    let tile: Vec<u16> = (0..LDM_ROWS * 8).map(|_| rng.random()).collect();
    // Rows in any order, repeats allowed; the lanes whose addresses .x1/.x2 ignore point at
    // rows that would change the result if they were read.
    let row_of_lane: Vec<u32> = (0..WARP)
        .map(|_| rng.random_range(0..LDM_ROWS as u32))
        .collect();
    let mut input = Vec::new();
    push_u16s(&mut input, &tile);
    push_u32s(&mut input, &row_of_lane);
    let mut want = Vec::new();
    for (_, matrices, trans) in LDM_VARIANTS {
        for lane in 0..WARP {
            for j in 0..4 {
                want.push(match j < matrices {
                    true => ldmatrix_register(&tile, &row_of_lane, lane, j, trans),
                    false => 0,
                });
            }
        }
    }
    on_every_device("ldmatrix", |device| {
        let out = u32s(&run_ok(
            device,
            Case::CUATTN_PRIMITIVE_TEST_LDMATRIX,
            &input,
            4 * want.len(),
        ));
        compare_bits("registers", &out, &want, |i| {
            let (name, _, _) = LDM_VARIANTS[i / 4 / WARP];
            format!("{name} lane {} r[{}]", i / 4 % WARP, i % 4)
        })
    });
}

// ---------------------------------------------------------------------------------------------
// cp.async -> swizzled tile -> ldmatrix -> mma, and the planted missing .trans.
// ---------------------------------------------------------------------------------------------

const GEMM_M: usize = 16;
const GEMM_K: usize = 64;
const GEMM_N: usize = 64;
const GEMM_N_TILES: usize = GEMM_N / 8;
/// Four chained mma's per value: 2^-16 of sum |A B| covers their rounding with room to spare,
/// and is still far below the error of a single element taken from the wrong place.
const GEMM_RELATIVE_TOLERANCE: f64 = 1.0 / (1u64 << 16) as f64;

struct Gemm {
    input: Vec<u8>,
    /// S = A Kt^T and O = A V as [n-tile][lane][register] accumulator fragments.
    s: (Vec<f64>, Vec<f64>),
    o: (Vec<f64>, Vec<f64>),
}

impl Gemm {
    fn new(seed: u64) -> Gemm {
        let kind = Half16::Bf16;
        let mut rng = StdRng::seed_from_u64(seed);
        let a = random_tile(&mut rng, kind, GEMM_M, GEMM_K, 1.0);
        let kt = random_tile(&mut rng, kind, GEMM_N, GEMM_K, 1.0);
        let v = random_tile(&mut rng, kind, GEMM_K, GEMM_N, 1.0);
        let mut input = Vec::new();
        for tile in [&a, &kt, &v] {
            push_u16s(&mut input, tile);
        }
        // (value, tolerance) of element (m, n) of a product whose k-th term is term(m, k, n).
        let fragments = |term: &dyn Fn(usize, usize, usize) -> f64| {
            let (mut want, mut tol) = (Vec::new(), Vec::new());
            for nt in 0..GEMM_N_TILES {
                for lane in 0..WARP {
                    for i in 0..4 {
                        let (m, col) = c_position(lane, i);
                        let terms = (0..GEMM_K).map(|k| term(m, k, 8 * nt + col));
                        want.push(terms.clone().sum::<f64>());
                        tol.push(GEMM_RELATIVE_TOLERANCE * terms.map(f64::abs).sum::<f64>());
                    }
                }
            }
            (want, tol)
        };
        let s =
            fragments(&|m, k, n| kind.value(a[m * GEMM_K + k]) * kind.value(kt[n * GEMM_K + k]));
        let o = fragments(&|m, k, n| kind.value(a[m * GEMM_K + k]) * kind.value(v[k * GEMM_N + n]));
        Gemm { input, s, o }
    }

    /// Where fragment value i lies.
    fn place(name: &str, i: usize) -> String {
        let (nt, lane, reg) = (i / 4 / WARP, i / 4 % WARP, i % 4);
        let (row, col) = c_position(lane, reg);
        format!(
            "{name}: lane {lane} register {reg} of n-tile {nt} ({name}[{row}][{}])",
            8 * nt + col
        )
    }

    /// Runs `case` and compares S and O with the reference, each on its own.
    fn check(&self, device: &Device, case: Case) -> (Result<(), String>, Result<(), String>) {
        let values = GEMM_N_TILES * WARP * 4;
        let out = f32s(&run_ok(device, case, &self.input, 2 * 4 * values));
        let (s, o) = out.split_at(values);
        (
            compare_floats("S = A Kt^T", s, &self.s.0, &self.s.1, |i| {
                Gemm::place("S", i)
            }),
            compare_floats("O = A V", o, &self.o.0, &self.o.1, |i| Gemm::place("O", i)),
        )
    }
}

#[test]
fn cp_async_into_swizzled_tiles_then_ldmatrix_and_mma_compute_a_kt_and_a_v() {
    let gemm = Gemm::new(31);
    println!("A 16x64, Kt 64x64, V 64x64 bf16, seed 31");
    on_every_device("S = A Kt^T and O = A V", |device| {
        let (s, o) = gemm.check(device, Case::CUATTN_PRIMITIVE_TEST_GEMM);
        s.and(o)
    });
}

#[test]
fn ldmatrix_without_trans_for_row_major_v_is_caught_naming_lane_and_register() {
    let gemm = Gemm::new(31);
    on_every_device("planted missing .trans", |device| {
        let (s, o) = gemm.check(device, Case::CUATTN_PRIMITIVE_TEST_GEMM_V_WITHOUT_TRANS);
        s?; // the bug is in the V path only
        let message = match o {
            Ok(()) => return Err("O matched although V was loaded without .trans".into()),
            Err(message) => message,
        };
        println!("{message}");
        for needle in [
            "O = A V",
            "lane ",
            "register ",
            "n-tile ",
            "expected ",
            " got ",
        ] {
            if !message.contains(needle) {
                return Err(format!("the mismatch report lacks {needle:?}: {message}"));
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// cp.async: sizes, zero-fill tails and groups.
// ---------------------------------------------------------------------------------------------

const COPY_THREADS: usize = 64;
/// Bytes per copy of each pair of regions: ca 4, ca 8, ca 16, cg 16 (whole, then zero-filled).
const COPY_SIZES: [usize; 4] = [4, 8, 16, 16];
const COPY_NAMES: [&str; 4] = ["ca 4", "ca 8", "ca 16", "cg 16"];

#[test]
fn cp_async_copies_4_8_and_16_bytes_and_zero_fills_tails_bit_exact() {
    let bytes = COPY_THREADS * 2 * COPY_SIZES.iter().sum::<usize>();
    let mut rng = StdRng::seed_from_u64(41);
    let input: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
    // (instruction, whole or tail, thread, byte) of each byte of shared memory.
    let mut owner = Vec::new();
    let mut want = Vec::new();
    for (k, size) in COPY_SIZES.into_iter().enumerate() {
        for tail in [false, true] {
            for t in 0..COPY_THREADS {
                let src_bytes = if tail { t % (size + 1) } else { size };
                for b in 0..size {
                    let at = want.len();
                    want.push(if b < src_bytes { input[at] } else { 0 });
                    owner.push((k, tail, t, b));
                }
            }
        }
    }
    on_every_device("cp.async", |device| {
        let out = run_ok(device, Case::CUATTN_PRIMITIVE_TEST_CP_ASYNC, &input, bytes);
        compare_bits("shared memory after wait_all", &out, &want, |i| {
            let (k, tail, t, b) = owner[i];
            let form = if tail { "src-size" } else { "whole" };
            format!("byte {b} of thread {t}'s {} ({form}) copy", COPY_NAMES[k])
        })
    });
}

const GROUP_THREADS: usize = 64;
const GROUP_REGIONS: usize = 4;
const GROUP_SNAPSHOTS: usize = 5;
const CHUNK: usize = 16;
/// The waits before each snapshot, and how many groups (oldest first) must have landed by then.
const GROUP_WAITS: [(&str, usize); GROUP_SNAPSHOTS] = [
    ("no wait", 0),
    ("wait_group 2", 1),
    ("wait_group 1", 2),
    ("wait_group 0", 3),
    ("wait_all", 4),
];

fn group_input() -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(42);
    (0..GROUP_REGIONS * GROUP_THREADS * CHUNK)
        .map(|_| rng.random())
        .collect()
}

/// Checks each snapshot byte: landed chunks hold the source; the emulator (`strict`) shows the
/// poison in chunks still in flight, a GPU either the old or the new byte.
fn check_groups(out: &[u8], input: &[u8], strict: bool) -> Result<(), String> {
    let mut bad = Vec::new();
    for (s, (wait, landed)) in GROUP_WAITS.into_iter().enumerate() {
        for t in 0..GROUP_THREADS {
            for g in 0..GROUP_REGIONS {
                for b in 0..CHUNK {
                    let got = out[((s * GROUP_THREADS + t) * GROUP_REGIONS + g) * CHUNK + b];
                    let src = input[(g * GROUP_THREADS + t) * CHUNK + b];
                    let ok = match (g < landed, strict) {
                        (true, _) => got == src,
                        (false, true) => got == INFLIGHT,
                        (false, false) => got == OLD || got == src,
                    };
                    if !ok {
                        bad.push(format!(
                            "after {wait}: thread {t} group {g} byte {b}: got {got:#04x}, source \
                             {src:#04x}"
                        ));
                    }
                }
            }
        }
    }
    match bad.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{} bytes wrong; {}",
            bad.len(),
            bad[..bad.len().min(8)].join("; ")
        )),
    }
}

#[test]
fn cp_async_wait_group_n_lands_all_but_the_n_newest_groups_and_never_uncommitted_copies() {
    let input = group_input();
    let bytes = GROUP_SNAPSHOTS * GROUP_THREADS * GROUP_REGIONS * CHUNK;
    let case = Case::CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS;
    on_every_device("cp.async groups", |device| {
        // The kernel reads chunks in flight on purpose: the emulator's checker stays off.
        let _checker = (!device.is_cuda()).then(|| common::MemcheckSetting::new(false));
        let out = run_ok(device, case, &input, bytes);
        check_groups(&out, &input, !device.is_cuda())
    });
}

/// The planted bug of a read before cp.async.wait_group: the emulator's poison reads as NaN.
#[test]
fn reading_cp_async_data_before_wait_group_reads_nan_poison_on_the_emulator() {
    const ROW: usize = 8;
    let mut rng = StdRng::seed_from_u64(43);
    let data: Vec<u16> = (0..WARP * ROW)
        .map(|_| Half16::Bf16.bits(rng.random_range(2.0..4.0)))
        .collect();
    let mut input = Vec::new();
    push_u16s(&mut input, &data);
    let values: Vec<f64> = data.iter().map(|&b| Half16::Bf16.value(b)).collect();
    let case = Case::CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT;
    on_every_device("read before wait", |device| {
        let _checker = (!device.is_cuda()).then(|| common::MemcheckSetting::new(false));
        let out = f32s(&run_ok(device, case, &input, 2 * 4 * WARP * ROW));
        let (before, after) = out.split_at(WARP * ROW);
        let exact = vec![0.0; values.len()];
        compare_floats("after wait_group 0", after, &values, &exact, |i| {
            format!("lane {} element {}", i / ROW, i % ROW)
        })?;
        let wrong: Vec<String> = (0..before.len())
            .filter(|&i| match device.is_cuda() {
                false => !before[i].is_nan(),
                true => before[i] != 1.0 && f64::from(before[i]) != values[i],
            })
            .take(8)
            .map(|i| format!("lane {} element {}: {}", i / ROW, i % ROW, before[i]))
            .collect();
        match wrong.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "before the wait, expected NaN (emulator) or 1.0 or the data (GPU): {}",
                wrong.join("; ")
            )),
        }
    });
}

/// With the memory checker on, the same reads stop the emulator, naming the cp.async.
#[test]
fn memory_checker_stops_reads_of_cp_async_data_still_in_flight() {
    let _checker = common::MemcheckSetting::new(true);
    let input = group_input();
    for (case, out_bytes) in [
        (
            Case::CUATTN_PRIMITIVE_TEST_CP_ASYNC_GROUPS,
            GROUP_SNAPSHOTS * GROUP_THREADS * GROUP_REGIONS * CHUNK,
        ),
        (
            Case::CUATTN_PRIMITIVE_TEST_CP_ASYNC_READ_BEFORE_WAIT,
            2 * 4 * WARP * 8,
        ),
    ] {
        let (status, message) = run(&Device::emulator(), case, &input, out_bytes)
            .expect_err("reading a chunk in flight must stop the block");
        println!("{case:?}: {message}");
        assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
        assert!(message.contains("in-flight cp.async"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// 16-byte vector accesses, packing and unpacking.
// ---------------------------------------------------------------------------------------------

const VEC_THREADS: usize = 64;

/// Floats that exercise round to nearest even into bf16 and f16: ties both ways, values between,
/// f16 overflow and subnormals, f32 subnormals, zeros and infinities (no NaN: the GPU
/// canonicalizes NaN payloads, the half crate keeps them).
fn pack_inputs(rng: &mut StdRng) -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        65504.0,
        65520.0, // the f16 tie between 65504 and infinity: rounds to infinity
        1e-39,   // an f32 subnormal
        -3e-6,   // an f16 subnormal
        6e-8,
    ];
    while xs.len() < 2 * VEC_THREADS {
        let sign = if rng.random() { 0x8000_0000u32 } else { 0 };
        let exponent = rng.random_range(100u32..150) << 23; // 2^-27 .. 2^22
        let mantissa: u32 = rng.random::<u32>() & 0x007f_ffff;
        let mantissa = match xs.len() % 4 {
            0 => (mantissa & !0xffff) | 0x8000, // a bf16 tie
            1 => (mantissa & !0x1fff) | 0x1000, // an f16 tie (for normal f16 results)
            _ => mantissa,
        };
        xs.push(f32::from_bits(sign | exponent | mantissa));
    }
    xs
}

/// A random 32-bit pattern whose two halves are not NaN as bf16 nor as f16.
fn packed_input(rng: &mut StdRng) -> u32 {
    loop {
        let bits: u32 = rng.random();
        let halves = [bits as u16, (bits >> 16) as u16];
        if halves
            .iter()
            .all(|&h| !bf16::from_bits(h).is_nan() && !f16::from_bits(h).is_nan())
        {
            return bits;
        }
    }
}

#[test]
fn vector_accesses_move_16_bytes_and_packing_rounds_to_nearest_even_bit_exact() {
    let mut rng = StdRng::seed_from_u64(51);
    let src: Vec<u8> = (0..VEC_THREADS * CHUNK).map(|_| rng.random()).collect();
    let pairs = pack_inputs(&mut rng);
    let packed: Vec<u32> = (0..VEC_THREADS).map(|_| packed_input(&mut rng)).collect();
    let mut input = src.clone();
    push_f32s(&mut input, &pairs);
    push_u32s(&mut input, &packed);

    let mut want = Vec::new();
    for t in 0..VEC_THREADS {
        let from = (VEC_THREADS - 1 - t) * CHUNK;
        want.extend_from_slice(&src[from..from + CHUNK]);
    }
    let bf16_pairs: Vec<u32> = pairs
        .chunks_exact(2)
        .map(|p| pair(Half16::Bf16.bits(p[0]), Half16::Bf16.bits(p[1])))
        .collect();
    let half_pairs: Vec<u32> = pairs
        .chunks_exact(2)
        .map(|p| pair(Half16::F16.bits(p[0]), Half16::F16.bits(p[1])))
        .collect();
    let unpack = |to_f32: fn(u16) -> f32| -> Vec<u32> {
        packed
            .iter()
            .flat_map(|&p| {
                [
                    to_f32(p as u16).to_bits(),
                    to_f32((p >> 16) as u16).to_bits(),
                ]
            })
            .collect()
    };
    push_u32s(&mut want, &bf16_pairs);
    push_u32s(&mut want, &half_pairs);
    push_u32s(&mut want, &unpack(|h| bf16::from_bits(h).to_f32()));
    push_u32s(&mut want, &unpack(|h| f16::from_bits(h).to_f32()));

    let copy_bytes = VEC_THREADS * CHUNK;
    let words = |bytes: &[u8]| u32s(&bytes[copy_bytes..]);
    on_every_device("vector accesses and packing", |device| {
        let out = run_ok(device, Case::CUATTN_PRIMITIVE_TEST_VEC, &input, want.len());
        compare_bits(
            "ld/st_global_v4, ld/st_shared_v4",
            &out[..copy_bytes],
            &want[..copy_bytes],
            |i| format!("byte {} of thread {}'s copy", i % CHUNK, i / CHUNK),
        )?;
        compare_bits("packing", &words(&out), &words(&want), |i| {
            let t = i % VEC_THREADS;
            match i / VEC_THREADS {
                0 => format!("pack_bf16x2({}, {})", pairs[2 * t], pairs[2 * t + 1]),
                1 => format!("pack_half2({}, {})", pairs[2 * t], pairs[2 * t + 1]),
                2 => format!(
                    "unpack_bf16x2({:#010x}) element {}",
                    packed[i / 2 % VEC_THREADS],
                    i % 2
                ),
                _ => format!(
                    "unpack_half2({:#010x}) element {}",
                    packed[i / 2 % VEC_THREADS],
                    i % 2
                ),
            }
        })
    });
}

// ---------------------------------------------------------------------------------------------
// ex2.approx.ftz.f32, quad and warp reductions, swizzle.
// ---------------------------------------------------------------------------------------------

const EXP2_COUNT: usize = 4096;

/// The functions of the EXP2 case's kernel, in the order of its outputs.
#[derive(Clone, Copy)]
enum Exp2Output {
    FastExp2 = 0,
    FastTanh = 1,
    FmaExp2 = 2,
}

/// Runs the EXP2 case on `xs` (EXP2_COUNT inputs) on every device and checks `output`'s value for
/// each x with `accepts(x, got)`; a failure names up to 8 inputs, with `want(x)`.
fn check_exp2_output(
    name: &str,
    output: Exp2Output,
    xs: &[f32],
    accepts: impl Fn(usize, f32) -> bool,
    want: impl Fn(usize) -> String,
) {
    assert_eq!(xs.len(), EXP2_COUNT);
    let mut input = Vec::new();
    push_f32s(&mut input, xs);
    on_every_device(name, |device| {
        let out = f32s(&run_ok(
            device,
            Case::CUATTN_PRIMITIVE_TEST_EXP2,
            &input,
            12 * EXP2_COUNT,
        ));
        let got = &out[output as usize * EXP2_COUNT..][..EXP2_COUNT];
        let wrong: Vec<String> = (0..EXP2_COUNT)
            .filter(|&i| !accepts(i, got[i]))
            .map(|i| format!("{name}({}) = {}, want {}", xs[i], got[i], want(i)))
            .collect();
        match wrong.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "{} wrong; {}",
                wrong.len(),
                wrong[..wrong.len().min(8)].join("; ")
            )),
        }
    });
}

#[test]
fn fast_exp2_is_within_2_ulp_of_2_to_the_x_and_flushes_subnormal_results() {
    let mut rng = StdRng::seed_from_u64(61);
    let mut xs = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        10.0,
        -125.5,
        127.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        128.0,   // 2^128 overflows to infinity
        -127.0,  // 2^-127 is subnormal: flushed to +0
        -140.25, // likewise
        -150.0,
        -1e4,
        1e-40, // a subnormal input: treated as 0, so 2^x = 1
    ];
    while xs.len() < EXP2_COUNT {
        xs.push(rng.random_range(-125.9f32..127.9));
    }
    let want: Vec<Exp2> = xs.iter().map(|&x| Exp2::of(x)).collect();
    check_exp2_output(
        "fast_exp2",
        Exp2Output::FastExp2,
        &xs,
        |i, got| want[i].accepts(got),
        |i| format!("{:?}", want[i]),
    );
}

#[test]
fn fast_tanh_is_within_2_to_the_minus_20_of_tanh_and_saturates() {
    let mut rng = StdRng::seed_from_u64(62);
    let mut xs = vec![
        0.0,
        -0.0,
        1e-6,
        -1e-3,
        0.5,
        -0.5,
        1.0,
        3.0,
        -9.0,
        30.0,
        -45.0,
        100.0,
        -1e4,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    while xs.len() < EXP2_COUNT {
        // Mostly where tanh bends, some far out where it has saturated.
        let wide = xs.len() % 8 == 0;
        xs.push(rng.random_range(if wide { -60.0f32..60.0 } else { -4.0..4.0 }));
    }
    // The error is absolute (see fast_tanh): about 2^-22 from each of ex2 and rcp, 2^-24 from
    // each rounding; 2^-20 bounds their sum.
    let tolerance = 2f64.powi(-20);
    check_exp2_output(
        "fast_tanh",
        Exp2Output::FastTanh,
        &xs,
        |i, got| match xs[i].is_nan() {
            true => got.is_nan(),
            false => within(got, f64::from(xs[i]).tanh(), tolerance),
        },
        |i| xs[i].tanh().to_string(),
    );
}

#[test]
fn fma_exp2_is_within_2_to_the_minus_18_relative_of_2_to_the_x() {
    let mut rng = StdRng::seed_from_u64(63);
    let mut xs = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5, // a tie: rounds to the even integer 0
        -0.5,
        1.5,
        -2.5,
        8.0, // the softmax's largest input (OnlineSoftmax::kMaxLag)
        1e-40,
        -1e-30,
        -126.0,
        -126.25,
        -126.5,
        -126.75,
        -127.0,
        -140.25,
        -1e4,
        127.25,
        127.5, // 2^x is finite to 128, fma_exp2 infinite from 127.5
        128.0,
        1e4,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    while xs.len() < EXP2_COUNT {
        // Mostly the softmax's range (scores less a max, at most 8 above it), some far out.
        let wide = xs.len() % 4 == 0;
        xs.push(rng.random_range(if wide { -126.0f32..127.4 } else { -30.0..8.0 }));
    }
    let tolerance = 2f64.powi(-18);
    let smallest_normal = 2f64.powi(-126);
    let accepts = |x: f32, got: f32| {
        let want = f64::from(x).exp2();
        if x.is_nan() {
            got.is_nan()
        } else if x >= 127.5 {
            got == f32::INFINITY
        } else if want < smallest_normal {
            // +0 (from -127 down, as ex2.approx.ftz), or the subnormal 2^x to within the bound.
            got.to_bits() == 0 || (f64::from(got) - want).abs() <= tolerance * smallest_normal
        } else {
            (f64::from(got) / want - 1.0).abs() <= tolerance
        }
    };
    check_exp2_output(
        "fma_exp2",
        Exp2Output::FmaExp2,
        &xs,
        |i, got| accepts(xs[i], got),
        |i| xs[i].exp2().to_string(),
    );
}

/// What fast_exp2(x) may return.
#[derive(Debug)]
enum Exp2 {
    Nan,
    /// +0 (results below 2^-126, flushed) or +infinity (2^x >= 2^128).
    Exactly(f32),
    /// Within 2 ulp of 2^x: PTX ISA, "Floating Point Instructions: ex2", gives ex2.approx.f32 a
    /// maximum error of 2 ulp across the full range. ulp(y) = 2^(floor(log2 y) - 23).
    Within {
        exact: f64,
        tolerance: f64,
    },
}

impl Exp2 {
    fn of(x: f32) -> Exp2 {
        let exact = 2f64.powf(f64::from(x));
        if x.is_nan() {
            Exp2::Nan
        } else if exact >= 2f64.powi(128) {
            Exp2::Exactly(f32::INFINITY)
        } else if exact < f64::from(f32::MIN_POSITIVE) {
            Exp2::Exactly(0.0)
        } else {
            let ulp = 2f64.powi(exact.log2().floor() as i32 - 23);
            Exp2::Within {
                exact,
                tolerance: 2.0 * ulp,
            }
        }
    }

    fn accepts(&self, got: f32) -> bool {
        match *self {
            Exp2::Nan => got.is_nan(),
            Exp2::Exactly(y) => got.to_bits() == y.to_bits(),
            Exp2::Within { exact, tolerance } => within(got, exact, tolerance),
        }
    }
}

const REDUCE_THREADS: usize = 128;

/// What every lane of a butterfly over __shfl_xor_sync ends with, lane offsets in `offsets`
/// order, in f32 as the kernel computes it.
fn butterfly(x: &[f32], offsets: &[usize], op: fn(f32, f32) -> f32) -> Vec<f32> {
    let mut v = x.to_vec();
    for &offset in offsets {
        v = (0..v.len()).map(|l| op(v[l], v[l ^ offset])).collect();
    }
    v
}

#[test]
fn quad_and_warp_reductions_follow_the_butterfly_order_bit_exact() {
    let mut rng = StdRng::seed_from_u64(71);
    let x: Vec<f32> = (0..REDUCE_THREADS)
        .map(|_| rng.random_range(0.5f32..100.0) * if rng.random() { 1.0 } else { -1.0 })
        .collect();
    let mut input = Vec::new();
    push_f32s(&mut input, &x);
    const QUAD: [usize; 2] = [1, 2];
    const WARP_OFFSETS: [usize; 5] = [16, 8, 4, 2, 1];
    let sum = |a: f32, b: f32| a + b;
    let want: Vec<u32> = [
        butterfly(&x, &QUAD, f32::max),
        butterfly(&x, &QUAD, sum),
        butterfly(&x, &WARP_OFFSETS, f32::max),
        butterfly(&x, &WARP_OFFSETS, sum),
    ]
    .concat()
    .into_iter()
    .map(f32::to_bits)
    .collect();
    const NAMES: [&str; 4] = ["quad_max", "quad_sum", "warp_max", "warp_sum"];
    on_every_device("reductions", |device| {
        let out = u32s(&run_ok(
            device,
            Case::CUATTN_PRIMITIVE_TEST_REDUCE,
            &input,
            4 * want.len(),
        ));
        compare_bits("reductions (f32 bits)", &out, &want, |i| {
            format!(
                "{} of thread {}",
                NAMES[i / REDUCE_THREADS],
                i % REDUCE_THREADS
            )
        })
    });
}

const SWIZZLE_ROWS: usize = 64;
const SWIZZLE_WIDTHS: [usize; 6] = [2, 4, 8, 16, 24, 32];
/// 16-byte chunks per 128-byte line of the 32 4-byte banks.
const BANK_GROUPS: usize = 8;

/// Checks that `map` ([row][chunk] -> chunk position in the row) permutes each row, and that a
/// 16-byte access by 8 lanes is conflict-free for both patterns a tile sees: ldmatrix (one chunk
/// of 8 consecutive rows) and 16-byte stores (8 consecutive chunks in row-major order).
fn check_swizzle(width: usize, map: &[i32]) -> Result<(), String> {
    let position = |row: usize, chunk: usize| map[row * width + chunk] as usize;
    for row in 0..SWIZZLE_ROWS {
        let mut seen: Vec<usize> = (0..width).map(|c| position(row, c)).collect();
        seen.sort_unstable();
        if seen != (0..width).collect::<Vec<_>>() {
            return Err(format!(
                "row {row} is not a permutation of its chunks: {seen:?}"
            ));
        }
    }
    let group = |row: usize, chunk: usize| (row * width + position(row, chunk)) % BANK_GROUPS;
    let distinct = |groups: Vec<usize>| {
        let mut g = groups;
        g.sort_unstable();
        g.dedup();
        g.len() == BANK_GROUPS
    };
    for first in 0..=SWIZZLE_ROWS - BANK_GROUPS {
        for chunk in 0..width {
            if !distinct(
                (first..first + BANK_GROUPS)
                    .map(|r| group(r, chunk))
                    .collect(),
            ) {
                return Err(format!(
                    "ldmatrix of chunk {chunk} of rows {first}..{} conflicts",
                    first + 7
                ));
            }
        }
    }
    for start in (0..SWIZZLE_ROWS * width).step_by(BANK_GROUPS) {
        let chunks = start..start + BANK_GROUPS;
        if !distinct(chunks.map(|i| group(i / width, i % width)).collect()) {
            return Err(format!(
                "16-byte stores of chunks {start}..{} conflict",
                start + 7
            ));
        }
    }
    Ok(())
}

#[test]
fn swizzle_is_a_bijection_and_conflict_free_for_ldmatrix_and_16_byte_stores() {
    let entries: usize = SWIZZLE_WIDTHS.iter().map(|w| SWIZZLE_ROWS * w).sum();
    // The check can fail: no unswizzled tile passes it.
    for width in SWIZZLE_WIDTHS {
        let identity: Vec<i32> = (0..SWIZZLE_ROWS * width)
            .map(|i| (i % width) as i32)
            .collect();
        assert!(
            check_swizzle(width, &identity).is_err(),
            "unswizzled width {width} passed"
        );
    }
    on_every_device("swizzle", |device| {
        let out = i32s(&run_ok(
            device,
            Case::CUATTN_PRIMITIVE_TEST_SWIZZLE,
            &[],
            4 * entries,
        ));
        let mut at = 0;
        for width in SWIZZLE_WIDTHS {
            let map = &out[at..at + SWIZZLE_ROWS * width];
            check_swizzle(width, map).map_err(|e| format!("{width} chunks per row: {e}"))?;
            at += SWIZZLE_ROWS * width;
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Planted faults (emulator only) and argument checks.
// ---------------------------------------------------------------------------------------------

/// Runs a planted fault on the emulator; asserts the status and that the message names each of
/// `needles`.
fn assert_fault(case: Case, input: &[u8], needles: &[&str]) {
    let (status, message) =
        run(&Device::emulator(), case, input, 0).expect_err("a planted fault must stop the kernel");
    println!("{case:?}: {message}");
    assert_eq!(status, Status::CUATTN_ERROR_KERNEL_FAULT, "{message}");
    for needle in needles {
        assert!(message.contains(needle), "no {needle:?} in: {message}");
    }
}

#[test]
fn ldmatrix_row_address_off_16_byte_alignment_faults_naming_the_lane() {
    assert_fault(
        Case::CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_MISALIGNED,
        &[],
        &[
            "primitive_test_fault_ldmatrix_misaligned",
            "thread 5 (warp 0, lane 5)",
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16: misaligned address",
        ],
    );
}

#[test]
fn ldmatrix_of_global_memory_faults() {
    assert_fault(
        Case::CUATTN_PRIMITIVE_TEST_FAULT_LDMATRIX_GLOBAL,
        &[0; 256],
        &[
            "thread 0 (warp 0, lane 0)",
            "x2.shared.b16",
            "not in shared memory",
        ],
    );
}

#[test]
fn cp_async_from_a_misaligned_source_faults_naming_the_thread() {
    assert_fault(
        Case::CUATTN_PRIMITIVE_TEST_FAULT_CP_ASYNC_MISALIGNED,
        &[0; 512],
        &[
            "thread 3 (warp 0, lane 3)",
            "cp.async.cg.shared.global",
            "16-byte aligned",
        ],
    );
}

#[test]
fn lanes_splitting_between_mma_and_ldmatrix_fault_naming_both() {
    // Which half arrives first is the scheduler's business; the message names both.
    assert_fault(
        Case::CUATTN_PRIMITIVE_TEST_FAULT_MMA_LDMATRIX_MISMATCH,
        &[],
        &[
            "called ",
            " wait in ",
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32(mask 0xffffffff)",
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16(mask 0xffffffff)",
        ],
    );
}

#[test]
fn mma_with_an_exited_lane_faults_naming_it() {
    assert_fault(
        Case::CUATTN_PRIMITIVE_TEST_FAULT_MMA_EXITED_LANE,
        &[],
        &[
            "mma.sync.aligned.m16n8k16",
            "reached by threads 0-6, 8-31",
            "7 (exited)",
        ],
    );
}

#[test]
fn unknown_cases_short_outputs_and_missing_inputs_are_invalid_arguments() {
    let emulator = Device::emulator();
    let invalid = |case: Case, input: &[u8], out_bytes: usize, needle: &str| {
        let (status, message) =
            run(&emulator, case, input, out_bytes).expect_err("must be refused");
        assert_eq!(status, Status::CUATTN_ERROR_INVALID_ARGUMENT, "{message}");
        assert!(message.contains(needle), "no {needle:?} in: {message}");
    };
    invalid(
        Case(99),
        &[],
        0,
        "test_case = 99 is not a cuattn_primitive_test_case",
    );
    invalid(
        Case::CUATTN_PRIMITIVE_TEST_SWIZZLE,
        &[],
        16,
        "needs out of at least 22016 bytes",
    );
    invalid(
        Case::CUATTN_PRIMITIVE_TEST_EXP2,
        &[],
        4 * EXP2_COUNT,
        "reads `in`, which is null",
    );
}

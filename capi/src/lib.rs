//! cuattn's C ABI as a static library (`libcuattn_capi.a`) and a shared one (`libcuattn_capi.so`)
//! for C and C++ engines: the functions of `csrc/cuattn.h`, which `cuattn::capi` defines and
//! exports under their C names. This crate only names the crate types, so that the cuattn crate
//! itself stays an rlib and Rust engines link it once.

// Linking the crate is what brings its `#[no_mangle]` functions into both libraries; the use
// below keeps the dependency from looking unused.
pub use cuattn::capi;

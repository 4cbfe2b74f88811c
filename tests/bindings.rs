//! src/ffi.rs must be exactly what bindgen makes of csrc/cuattn_internal.h (which includes the
//! public csrc/cuattn.h), so Rust and C never drift. Regenerate with `scripts/gen-bindings.sh`
//! after editing either header.

use std::path::Path;

/// The header bindgen reads: the internal one, which includes the public one.
const HEADER: &str = "csrc/cuattn_internal.h";

/// The one bindgen configuration of the project.
fn generate(header: &Path) -> Result<String, String> {
    let bindings = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_item("(cuattn|CUATTN)_.*")
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate()
        .map_err(|e| e.to_string())?;
    Ok(bindings.to_string())
}

fn libclang_available() -> bool {
    // bindgen loads libclang at run time; probing through it panics when it is absent.
    std::panic::catch_unwind(|| generate(Path::new(HEADER))).is_ok()
}

#[test]
fn ffi_rs_matches_bindgen_output_of_the_headers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).unwrap();
    if !libclang_available() {
        assert!(
            std::env::var_os("CUATTN_REQUIRE_LIBCLANG").is_none(),
            "CUATTN_REQUIRE_LIBCLANG is set but libclang could not be loaded"
        );
        println!("skipped: libclang not found, src/ffi.rs not checked");
        return;
    }
    let fresh = generate(Path::new(HEADER)).expect("bindgen failed on the headers");
    let committed_path = root.join("src/ffi.rs");
    if std::env::var("CUATTN_BLESS_BINDINGS").is_ok() {
        std::fs::write(&committed_path, &fresh).unwrap();
        println!("wrote {}", committed_path.display());
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap();
    assert!(
        committed == fresh,
        "src/ffi.rs is stale: csrc/cuattn.h or csrc/cuattn_internal.h changed; run \
         scripts/gen-bindings.sh and commit"
    );
}

/// The public header stands alone: everything it declares is public API, and nothing of the
/// internal header leaks into it (the raw launchers, the emulator's hooks, the test kernels).
#[test]
fn public_header_declares_no_internal_item() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let public = std::fs::read_to_string(root.join("csrc/cuattn.h")).unwrap();
    for internal in [
        "cuattn_raw_",
        "cuattn_emu_",
        "cuattn_set_last_error",
        "cuattn_set_flash_tiles",
        "scale_log2",
        "selftest",
        "memcheck_test",
        "primitive_test",
        "bench_mma",
        "#include \"cuattn_internal.h\"",
    ] {
        assert!(
            !public.contains(internal),
            "csrc/cuattn.h mentions `{internal}`, which belongs in csrc/cuattn_internal.h"
        );
    }
}

//! examples/c/attention.c, plain C compiled with the system C compiler against csrc/cuattn.h and
//! the cuattn-capi static library (built through cargo first, reusing this build of cuattn), runs
//! on the emulator: every public entry point, bad arguments with their messages, and results
//! against references computed in C. Also: the static and the shared library export every
//! function the public header declares, and the README gives the link line used here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libraries the static library needs from the system, after it on the link line (the
/// README's link line; CUDA builds' static runtime included: it needs -ldl, -lrt, -lpthread).
const SYSTEM_LIBS: &[&str] = &["-lstdc++", "-lpthread", "-ldl", "-lrt", "-lm"];

/// The profile directory this test binary was built into (`target/release` under `cargo test
/// --release`), whose parent is the target directory.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap(); // <target>/<profile>/deps/c_example-<hash>
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds the cuattn-capi package with this test's profile into this test's target directory:
/// cuattn itself is already built there with the same features, so only the small C library
/// crate compiles and links.
fn build_capi() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let profile_dir = profile_dir();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(name) => name.to_string(),
        None => panic!("no profile directory above {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--package", "cuattn-capi", "--profile", &profile])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(profile_dir.parent().unwrap())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --package cuattn-capi failed");
    profile_dir
}

/// The function names csrc/cuattn.h declares: a declaration starts its line with the return
/// type, and the name is the word before the `(`.
fn public_functions() -> Vec<String> {
    let header =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/csrc/cuattn.h")).unwrap();
    let mut names: Vec<String> = header
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()) && !l.starts_with("typedef"))
        .filter_map(|l| {
            let name = l[..l.find('(')?].rsplit([' ', '*']).next()?;
            name.starts_with("cuattn_").then(|| name.to_string())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The global symbols a library defines (`nm`), or None where nm is missing.
fn defined_symbols(lib: &Path, dynamic: bool) -> Option<String> {
    let mut nm = Command::new("nm");
    if dynamic {
        nm.arg("-D");
    }
    let out = nm.arg("--defined-only").arg(lib).output().ok()?;
    assert!(out.status.success(), "nm {}", lib.display());
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn c_example_runs_every_public_entry_point_on_the_emulator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = build_capi();
    let static_lib = lib_dir.join("libcuattn_capi.a");
    let shared_lib = lib_dir.join("libcuattn_capi.so");

    // Both libraries export every function of the public header, under its C name.
    let functions = public_functions();
    assert!(
        functions.len() >= 30,
        "the header's functions: {functions:?}"
    );
    for (lib, dynamic) in [(&static_lib, false), (&shared_lib, true)] {
        let Some(symbols) = defined_symbols(lib, dynamic) else {
            println!(
                "skipped: nm not found, exports of {} not checked",
                lib.display()
            );
            continue;
        };
        let exported = |name: &str| {
            symbols.lines().any(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields.len() == 3 && fields[1] == "T" && fields[2] == name
            })
        };
        let missing: Vec<&String> = functions.iter().filter(|f| !exported(f)).collect();
        assert!(
            missing.is_empty(),
            "{} does not export {missing:?}",
            lib.display()
        );
        println!(
            "{}: exports all {} functions",
            lib.display(),
            functions.len()
        );
    }

    // The README's link line is the one used here.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let link_line = format!("libcuattn_capi.a {}", SYSTEM_LIBS.join(" "));
    assert!(
        readme.contains(&link_line),
        "README.md must give the link line `{link_line}`"
    );

    let exe = lib_dir.join("attention_c");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let compiled = Command::new(&cc)
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-I"])
        .arg(root.join("csrc"))
        .arg(root.join("examples/c/attention.c"))
        .arg(&static_lib)
        .args(SYSTEM_LIBS)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("the C compiler runs");
    assert!(
        compiled.success(),
        "compiling examples/c/attention.c failed"
    );

    let run = Command::new(&exe).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "examples/c/attention.c failed");
    assert!(stdout.contains("ok: "), "{stdout}");
}

//! The `cuattn` command: `info`, `check`, `run`, `bench`, `kv-plan`, `approx-report` (see
//! `cuattn --help`).

fn main() -> std::process::ExitCode {
    // A closed pipe (`cuattn check | head`) ends the command quietly, as it ends any Unix tool,
    // instead of a panic in println! (Rust starts programs with SIGPIPE ignored).
    #[cfg(unix)]
    // SAFETY: at start-up, before any other thread exists; sets the signal's default action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cuattn::cli::main()
}

//! The `cuattn` command: `info`, `check`, `run` (see `cuattn --help`).

fn main() -> std::process::ExitCode {
    cuattn::cli::main()
}

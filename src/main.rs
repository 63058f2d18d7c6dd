//! The `clipada` program: parses the command line and calls the library (`clipada::cli`).

fn main() -> std::process::ExitCode {
    clipada::cli::main()
}

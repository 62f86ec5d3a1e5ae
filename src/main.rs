//! The `envlayer` command: parses arguments and calls the library. See `envlayer --help`.

// The CLI is where output is printed (stdout: the result; stderr: progress, warnings, errors).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

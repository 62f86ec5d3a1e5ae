//! The `envlayer` command: parses arguments and calls the library. See `envlayer --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

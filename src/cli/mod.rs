//! Argument parsing and dispatch. Each command's work is in the library; this only turns flags into
//! options and results into output (stdout: the result; stderr: progress, warnings, errors).

mod args;
mod commands;
mod progress;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Exit code of `resolve --no-build` when no fresh image exists.
pub const EXIT_MISS: u8 = 3;

#[derive(Parser)]
#[command(name = "envlayer", version, about = "Build a conda environment into an OCI image, one layer per package")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build environment.yaml into an OCI image layout directory and/or push it to a registry.
    Build(commands::BuildArgs),
    /// Push an image from an OCI layout to a registry; prints repo@sha256:...
    Push(commands::PushArgs),
    /// Print a fresh image of the environment (repo@sha256:...), building and pushing one if needed.
    Resolve(commands::ResolveArgs),
    /// List the environment images of a repository.
    Ls(commands::RepoArgs),
    /// Delete the expired environment images of a repository.
    Prune(commands::PruneArgs),
    /// In an image with runtime packages: install them at first start, then run CMD.
    Runtime {
        /// Install and exit (for a Kubernetes init container sharing the prefix through a volume).
        #[arg(long)]
        install_only: bool,
        /// The command to run afterwards [default: /bin/sh].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Write the small example channel that examples/environment.yaml uses.
    ExampleChannel {
        /// Where to write the channel.
        dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ENVLAYER_LOG").unwrap_or_else(|_| "envlayer=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = match cli.command {
        Command::Build(args) => runtime.block_on(commands::build(args)),
        Command::Push(args) => runtime.block_on(commands::push(args)),
        Command::Resolve(args) => match runtime.block_on(commands::resolve(args)) {
            Err(e) if e.downcast_ref::<envlayer::lifecycle::LifecycleError>().is_some_and(|l| matches!(l, envlayer::lifecycle::LifecycleError::Miss { .. })) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_MISS);
            }
            other => other,
        },
        Command::Ls(args) => runtime.block_on(commands::ls(args)),
        Command::Prune(args) => runtime.block_on(commands::prune(args)),
        Command::Runtime { install_only, command } => runtime.block_on(commands::runtime(install_only, command)),
        Command::ExampleChannel { dir } => runtime
            .block_on(envlayer::synth::write_channel(&dir, envlayer::synth::example_packages()))
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            .map(|()| println!("{}", dir.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("error: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!("\n  caused by: {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}

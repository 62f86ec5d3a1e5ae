//! Argument parsing and dispatch. Each command's work is in the library; this only turns flags into
//! options and results into output (stdout: the result; stderr: progress, warnings, errors).

mod args;
mod build;
mod cache;
mod lock;
mod prepull;
mod push;
mod repo;
mod resolve;
mod runtime;
mod values;
mod progress;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;


#[derive(Parser)]
#[command(name = "envlayer", version, about = "Build a conda environment into an OCI image, one layer per package")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build environment.yaml into an OCI image layout directory and/or push it to a registry.
    Build(build::BuildArgs),
    /// Solve an environment and write its lock (for `build --lock`), building nothing.
    Lock(lock::LockArgs),
    /// Push an image from an OCI layout to a registry; prints repo@sha256:...
    Push(push::PushArgs),
    /// Print a fresh image of the environment (repo@sha256:...), building and pushing one if needed.
    Resolve(resolve::ResolveArgs),
    /// List the environment images of a repository.
    Ls(repo::RepoArgs),
    /// Delete the expired environment images of a repository.
    Prune(repo::PruneArgs),
    /// Print a Kubernetes DaemonSet that pre-pulls, by digest, every fresh environment image of a
    /// repository on every (selected) node.
    Prepull(prepull::PrepullArgs),
    /// In an image with runtime packages: install them at first start, then run CMD.
    Runtime {
        /// Install and exit (for a Kubernetes init container sharing the prefix through a volume).
        #[arg(long)]
        install_only: bool,
        /// The command to run afterwards [default: /bin/sh].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Show or clean the cache of packages and layers.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Print a shell completion script: `envlayer completions bash > /etc/bash_completion.d/envlayer`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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
        // Colour only on a terminal: never escape codes in a pipe or a CI log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Nothing envlayer writes (cache entries above all) may be writable by group or others, whatever
    // the umask the process inherited.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(old | rustix::fs::Mode::WGRP | rustix::fs::Mode::WOTH);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            code = run(cli.command) => Ok(code),
            signal = interrupted() => Err(signal),
        }
    });
    envlayer::scratch::release_all();
    match outcome {
        // The runtime is dropped normally: it waits for blocking work, so no thread outlives main.
        Ok(code) => code,
        Err(signal) => {
            // The work in flight was dropped and this process's scratch folders are removed, so an
            // interrupted build leaves nothing behind (an earlier output stays as it was). Blocking work
            // still running fails on the removed folders; it gets a moment to end before the exit.
            eprintln!("envlayer: interrupted by {signal}; temporary files removed, nothing was written");
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            std::process::exit(if signal == "SIGINT" { 130 } else { 143 })
        }
    }
}

/// Waits for SIGINT or SIGTERM and names it.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Build(args) => build::build(args).await,
        Command::Lock(args) => lock::lock(args).await,
        Command::Cache(c) => cache::cache(c),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "envlayer", &mut std::io::stdout());
            Ok(())
        }
        Command::Push(args) => push::push(args).await,
        Command::Resolve(args) => match resolve::resolve(args).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Ls(args) => repo::ls(args).await,
        Command::Prune(args) => repo::prune(args).await,
        Command::Prepull(args) => prepull::prepull(args).await,
        Command::Runtime { install_only, command } => runtime::runtime(install_only, command).await,
        Command::ExampleChannel { dir } => envlayer::testkit::write_channel(&dir, envlayer::testkit::example_packages())
            .await
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

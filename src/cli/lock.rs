//! `envlayer lock`: solve an environment and write its lock, without building anything.

use super::args::{NetworkArgs, SolveFlags};
use super::progress::Bars;
use super::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    flags: SolveFlags,
    /// Where to write the lock [default: <ENV_FILE's stem>.lock beside ENV_FILE].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print what was locked as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: NetworkArgs,
}

pub async fn lock(args: LockArgs) -> Result<()> {
    let opts = args.flags.options(&args.net)?;
    if !opts.platforms.is_empty() {
        return Err("envlayer lock makes the lock of one platform: run it once per --platform".into());
    }
    let path = args.output.clone().unwrap_or_else(|| envlayer::build::lock::default_path(&args.flags.env_file));
    let reporter = Bars::new(args.flags.quiet);
    let locked = envlayer::build::lock::lock(&opts, &path, &reporter).await;
    reporter.clear();
    let locked = locked?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&locked)?);
    } else {
        eprintln!(
            "locked {} for {}: {} conda packages{}",
            locked.name,
            locked.platform,
            locked.packages.len(),
            if locked.pip_packages.is_empty() { String::new() } else { format!(", {} pip packages", locked.pip_packages.len()) }
        );
        eprintln!("build from it with: envlayer build {} --lock {}", args.flags.env_file.display(), path.display());
        println!("{}", path.display());
    }
    Ok(())
}

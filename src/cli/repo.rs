//! `envlayer ls` and `envlayer prune`: the environment images of a repository.

use super::args::{ClockArgs, RegistryArgs};
use super::Result;
use clap::Args;
use envlayer::lifecycle::{self, EnvImage};
use envlayer::registry::Reference;

#[derive(Args)]
pub struct RepoArgs {
    /// The repository (registry/repo).
    #[arg(long)]
    repo: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    clock: ClockArgs,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

fn human_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}K", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

fn human_in(secs: Option<i64>) -> String {
    match secs {
        None => "never".into(),
        Some(s) if s <= 0 => "expired".into(),
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        Some(s) => format!("{}m", s / 60),
    }
}

fn table(images: &[EnvImage]) {
    println!("{:<24} {:<24} {:<16} {:<25} {:>10} {:>8} {:>9}", "NAME", "HASH", "STATUS", "CREATED", "EXPIRES IN", "PACKAGES", "SIZE");
    for i in images {
        let status = serde_json::to_value(i.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        // Everything here came from a registry: shown with control characters escaped.
        let esc = envlayer::net::escape;
        println!(
            "{:<24} {:<24} {:<16} {:<25} {:>10} {:>8} {:>9}",
            esc(&i.name),
            esc(&i.hash.chars().take(24).collect::<String>()),
            status,
            esc(i.created.as_deref().unwrap_or("-")),
            human_in(i.expires_in_seconds),
            i.packages,
            human_size(i.size)
        );
        if !i.runtime_packages.is_empty() {
            println!("{:<24} installs at start: {}", "", esc(&i.runtime_packages.join(", ")));
        }
    }
}

pub async fn ls(args: RepoArgs) -> Result<()> {
    let repo: Reference = args.repo.parse()?;
    let settings = args.registry.settings();
    let registry = envlayer::registry::connect(&repo, &settings.auth, &settings.client).await?;
    let images = lifecycle::list(&registry, &repo, args.clock.now()?).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
    } else {
        table(&images);
    }
    Ok(())
}

pub async fn prune(args: PruneArgs) -> Result<()> {
    let repo: Reference = args.repo.repo.parse()?;
    let settings = args.repo.registry.settings();
    let registry = envlayer::registry::connect(&repo, &settings.auth, &settings.client).await?;
    let gone = lifecycle::prune(&registry, &repo, args.repo.clock.now()?, args.dry_run).await?;
    if args.repo.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"dry_run": args.dry_run, "deleted": gone}))?);
    } else {
        for i in &gone {
            println!("{} {}:{} {}", if args.dry_run { "would delete" } else { "deleted" }, repo, envlayer::net::escape(&i.tag), i.digest);
        }
        if gone.is_empty() {
            eprintln!("nothing expired in {repo}");
        }
    }
    Ok(())
}

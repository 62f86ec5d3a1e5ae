//! `envlayer cache info` and `envlayer cache gc`.

use super::args::{default_cache_dir, parse_size};
use super::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Show what the cache holds, per folder.
    Info(CacheInfoArgs),
    /// Remove unused entries and what interrupted builds left behind.
    Gc(GcArgs),
}

#[derive(Args)]
pub struct CacheInfoArgs {
    /// The cache [default: as for build].
    #[arg(long, env = "ENVLAYER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct GcArgs {
    /// Also remove entries not used for this long (7d, 12h, 30m).
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// Then remove the least recently used entries until the cache is at most SIZE (20G, 500M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// The cache [default: as for build].
    #[arg(long, env = "ENVLAYER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1}G", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1}M", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1}K", n as f64 / 1024.0),
        n => format!("{n}B"),
    }
}

pub fn cache(command: CacheCommand) -> Result<()> {
    match command {
        CacheCommand::Info(a) => {
            let root = a.cache_dir.unwrap_or_else(default_cache_dir);
            let info = envlayer::cache_gc::info(&root);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("{}: {}", root.display(), human(info.bytes));
            let w = info.kinds.iter().map(|k| k.kind.len()).max().unwrap_or(0);
            for k in &info.kinds {
                println!("  {:<w$}  {:>8} entries  {:>8}  {}", k.kind, k.entries, human(k.bytes), k.holds);
            }
        }
        CacheCommand::Gc(a) => {
            let root = a.cache_dir.unwrap_or_else(default_cache_dir);
            let older_than = match a.older_than.as_deref() {
                Some(t) => Some(super::args::parse_ttl(t).map_err(|e| e.to_string().replace("--ttl", "--older-than"))?.ok_or("--older-than never removes nothing by age: leave the flag out")?),
                None => None,
            };
            let opts = envlayer::cache_gc::GcOptions { older_than, max_size: a.max_size, dry_run: a.dry_run, now: std::time::SystemTime::now() };
            let report = envlayer::cache_gc::gc(&root, &opts)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            let verb = if a.dry_run { "would remove" } else { "removed" };
            for r in &report.removed {
                println!("{verb} {} ({}, {})", r.path.display(), r.reason, human(r.bytes));
            }
            eprintln!("{}: {verb} {} entries, {} of {}", root.display(), report.removed.len(), human(report.bytes_freed), human(report.bytes_before));
        }
    }
    Ok(())
}

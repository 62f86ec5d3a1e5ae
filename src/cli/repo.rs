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
    pub json: bool,
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
    /// The registry cache to prune with the images (registry/repo, on the same registry), or `none`: its
    /// entries whose blobs no image left in --repo names are deleted [default: --repo].
    #[arg(long, value_name = "REPO")]
    cache_repo: Option<String>,
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

/// A registry's creation time to the second, in UTC (`2026-11-26T03:25:37Z`); as given when it does not parse.
fn short_time(t: Option<&str>) -> String {
    match t.map(|t| (t, t.parse::<jiff::Timestamp>())) {
        Some((_, Ok(ts))) => ts.round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_else(|_| ts.to_string()),
        Some((raw, Err(_))) => envlayer::net::escape(raw),
        None => "-".into(),
    }
}

/// `sha256:` and the first 12 hex digits, as `docker images` shows them.
fn short_digest(d: &str) -> String {
    d.get(..19).unwrap_or(d).to_string()
}

/// Rows in columns as wide as their widest cell; the last column is left as it is.
fn print_table(rows: &[Vec<String>], right: &[usize]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| if right.contains(&c) { format!("{v:>w$}", w = widths[c]) } else if c + 1 == cols { v.clone() } else { format!("{v:<w$}", w = widths[c]) })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

fn status(i: &EnvImage) -> String {
    serde_json::to_value(i.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn table(images: &[EnvImage]) {
    // Everything here came from a registry: shown with control characters escaped.
    let esc = envlayer::net::escape;
    let mut rows = vec![["TAG", "DIGEST", "STATUS", "CREATED", "EXPIRES IN", "PACKAGES", "SIZE", "OTHER TAGS"].map(String::from).to_vec()];
    for i in images {
        // Tags a user named (build tags `<tag>-<time>` are envlayer's, and left out here; --json has all).
        let named: Vec<String> = i.tags.iter().filter(|t| *t != &i.tag && !lifecycle::is_env_tag(t, i)).map(|t| esc(t)).collect();
        rows.push(vec![
            esc(&i.tag),
            short_digest(&i.digest),
            status(i),
            short_time(i.created.as_deref()),
            human_in(i.expires_in_seconds),
            i.packages.to_string(),
            human_size(i.size),
            named.join(","),
        ]);
    }
    print_table(&rows, &[4, 5, 6]);
    for i in images.iter().filter(|i| !i.platforms.is_empty()) {
        println!("{} is an index for: {}", esc(&i.tag), esc(&i.platforms.join(", ")));
    }
    for i in images.iter().filter(|i| !i.runtime_packages.is_empty()) {
        println!("{} installs at start: {}", esc(&i.tag), esc(&i.runtime_packages.join(", ")));
    }
}

impl RepoArgs {
    /// The repository and its environment images (one per manifest, newest first).
    pub async fn images(&self) -> Result<(Reference, Vec<EnvImage>)> {
        let repo: Reference = self.repo.parse()?;
        let settings = self.registry.settings();
        let registry = envlayer::registry::connect(&repo, &settings.auth, &settings.client).await?;
        let images = lifecycle::list(&registry, &repo, self.clock.now()?).await?;
        Ok((repo, images))
    }
}

pub async fn ls(args: RepoArgs) -> Result<()> {
    let (_, images) = args.images().await?;
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
    let cache_repo = match args.cache_repo.as_deref() {
        Some("none") => None,
        Some(r) => {
            let c: Reference = r.parse()?;
            if c.registry != repo.registry || c.tag.is_some() || c.digest.is_some() {
                return Err(format!("--cache-repo {r}: name a repository of {} (the registry of --repo), without a tag", repo.registry).into());
            }
            // A cache in its own repository may serve images of other repositories too, which this prune
            // does not see: its entries would go while those images still use them.
            if c.repository != repo.repository {
                return Err(format!(
                    "--cache-repo {r}: a registry cache outside --repo may serve images this prune does not see; prune it only with the images it serves (--cache-repo none here, and keep it, or delete it whole)"
                )
                .into());
            }
            Some(c.repository)
        }
        None => Some(repo.repository.clone()),
    };
    let gone = lifecycle::prune(&registry, &repo, args.repo.clock.now()?, args.dry_run).await?;
    // Cache entries go with the images: those whose blobs no image left names (in a dry run, the images
    // that would be deleted count as gone).
    let entries = match &cache_repo {
        Some(c) => {
            let skip = gone.iter().map(|i| i.digest.clone()).collect();
            let referenced = envlayer::regcache::prune::referenced_layers(&registry, &repo.repository, &skip).await?;
            envlayer::regcache::prune::prune_entries(&registry, c, &referenced, args.dry_run).await?
        }
        None => Vec::new(),
    };
    if args.repo.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"dry_run": args.dry_run, "deleted": gone, "cache_entries_deleted": entries}))?);
    } else {
        let verb = if args.dry_run { "would delete" } else { "deleted" };
        // A summary, on stderr: stdout has one line per image tag (the entries are listed by --json).
        if !entries.is_empty() {
            eprintln!("{verb} {} registry-cache entries in {repo} (no image left names their layers)", entries.len());
        }
        // One line per tag the delete removes (deleting a manifest removes all its tags), with the manifest.
        let verb = if args.dry_run { "would delete" } else { "deleted" };
        for i in &gone {
            for t in &i.tags {
                println!("{verb} {repo}:{} {} (created {})", envlayer::net::escape(t), i.digest, short_time(i.created.as_deref()));
            }
            for r in &i.referrers {
                println!("{verb} {repo}@{r} (an artifact about {}: its SBOM or the referrers index)", i.digest);
            }
        }
        if gone.is_empty() {
            eprintln!("nothing to prune in {repo}: no expired environment image without a tag a user named");
        }
    }
    Ok(())
}

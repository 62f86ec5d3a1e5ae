//! One function per command.

use super::args::{default_cache_dir, parse_base, BuildFlags, ClockArgs, RegistryArgs};
use super::progress::Bars;
use super::Result;
use clap::{Args, ValueEnum};
use envlayer::build::BaseRef;
use envlayer::lifecycle::{self, EnvImage};
use envlayer::registry::Reference;
use envlayer::spec::EnvSpec;
use std::path::PathBuf;

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    flags: BuildFlags,
    /// The OCI layout directory to write [default: <name>.oci, or none with --push].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Push the image to this repository (registry/repo[:tag]); prints repo@sha256:...
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// The image's tag inside the layout.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PushArgs {
    /// The OCI layout (DIR or DIR:TAG).
    layout: String,
    /// Where to push: registry/repo[:tag].
    reference: String,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    /// Where envlayer remembers which repositories hold which blobs [default: as for build].
    #[arg(long, env = "ENVLAYER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// repo@sha256:...
    Ref,
    /// Everything, as JSON.
    Json,
    /// A Kubernetes container snippet.
    K8s,
}

#[derive(Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    flags: BuildFlags,
    /// The repository environment images live in (registry/repo).
    #[arg(long)]
    repo: String,
    /// Build (and solve) again even if a fresh image exists.
    #[arg(long)]
    refresh: bool,
    /// Only look: exit with code 3 when there is no fresh image.
    #[arg(long)]
    no_build: bool,
    /// What to print.
    #[arg(long, value_enum, default_value = "ref")]
    format: Format,
}

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

pub async fn build(args: BuildArgs) -> Result<()> {
    let push_ref: Option<Reference> = args.push.as_deref().map(str::parse).transpose()?;
    let output = match (args.output, &push_ref) {
        (Some(o), _) => Some(o),
        (None, Some(_)) => None,
        (None, None) => Some(PathBuf::from(format!("{}.oci", EnvSpec::from_path(&args.flags.env_file)?.name))),
    };
    let mut opts = args.flags.options(output)?;
    opts.tag = args.tag;
    let reporter = Bars::new(args.flags.quiet);
    let built = envlayer::build(&opts, &reporter).await;
    reporter.clear();
    let built = built?;
    let summary = &built.summary;
    let pushed = match &push_ref {
        Some(target) => {
            let registry = envlayer::registry::connect(target, &opts.registry.auth, &opts.registry.client).await?;
            let mut locations = envlayer::push::BlobLocations::load(&opts.cache_dir, &target.registry);
            Some(envlayer::push::push_image(&registry, target, &built.image, args.flags.registry.push_jobs, &mut locations).await?)
        }
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(summary)?;
        v["push"] = serde_json::to_value(&pushed)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let w = &summary.work;
    eprintln!(
        "built {} ({} packages, {} layers; {} packed, {} from cache){}",
        summary.name,
        summary.packages.len(),
        summary.layers.len(),
        w.compressed,
        w.cached_layers,
        summary.output.as_ref().map(|o| format!(" -> {}:{}", o.display(), summary.tag)).unwrap_or_default()
    );
    for group in &summary.shared_layers {
        eprintln!("  shared layer: {}", group.join(", "));
    }
    match pushed {
        Some(p) => {
            eprintln!("pushed: {} blobs uploaded ({} bytes), {} mounted, {} already there", p.uploaded.len(), p.uploaded_bytes, p.mounted, p.existing);
            println!("{}", p.reference);
        }
        None => println!("{}", summary.manifest_digest),
    }
    Ok(())
}

pub async fn push(args: PushArgs) -> Result<()> {
    let target: Reference = args.reference.parse()?;
    let (dir, tag) = match parse_base(&args.layout)? {
        BaseRef::Layout { layout, tag } => (layout, tag),
        BaseRef::Registry(_) => return Err(format!("{} is not an OCI layout on disk", args.layout).into()),
    };
    let settings = args.registry.settings();
    let cache = args.cache_dir.unwrap_or_else(default_cache_dir);
    let report = lifecycle::push_layout(&dir, tag.as_deref(), &target, &settings, &cache, args.registry.push_jobs).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!("pushed: {} blobs uploaded ({} bytes), {} mounted, {} already there", report.uploaded.len(), report.uploaded_bytes, report.mounted, report.existing);
        println!("{}", report.reference);
    }
    Ok(())
}

pub async fn resolve(args: ResolveArgs) -> Result<()> {
    let repo: Reference = args.repo.parse()?;
    if repo.tag.is_some() || repo.digest.is_some() {
        return Err(format!("--repo {}: name a repository, without a tag (envlayer tags images <name>-<hash>)", args.repo).into());
    }
    let opts = args.flags.options(None)?;
    let reporter = Bars::new(args.flags.quiet || !matches!(args.format, Format::Ref));
    let resolved = lifecycle::resolve(&opts, &repo, args.refresh, args.no_build, args.flags.registry.push_jobs, &reporter).await;
    reporter.clear();
    let resolved = resolved?;
    match args.format {
        Format::Ref => println!("{}", resolved.reference),
        Format::Json => println!("{}", serde_json::to_string_pretty(&resolved)?),
        Format::K8s => print!("{}", envlayer::lifecycle::k8s_container(&resolved)?),
    }
    if !resolved.hit {
        eprintln!("built and pushed {} ({})", resolved.image.tag, resolved.reference);
    }
    Ok(())
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

pub async fn runtime(install_only: bool, command: Vec<String>) -> Result<()> {
    let dir = std::env::var_os("ENVLAYER_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(envlayer::runtime_install::RUNTIME_DIR));
    envlayer::runtime_install::ensure_installed(&dir, &super::progress::Lines).await?;
    if install_only {
        return Ok(());
    }
    let command = if command.is_empty() { vec!["/bin/sh".to_string()] } else { command };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&command[0]).args(&command[1..]).exec();
    Err(format!("cannot run {:?}: {err}", command[0]).into())
}

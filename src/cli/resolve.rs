//! `envlayer resolve`: a fresh image of an environment, built and pushed if needed.

use super::args::{BuildFlags, PushJobs};
use super::progress::Bars;
use super::Result;
use clap::{Args, ValueEnum};
use envlayer::lifecycle;
use envlayer::registry::Reference;
use std::process::ExitCode;

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
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    #[command(flatten)]
    push_jobs: PushJobs,
}

/// The TTL of `resolve`'s `<name>-<hash>` tags when --ttl is not given.
const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub async fn resolve(args: ResolveArgs) -> Result<ExitCode> {
    let repo: Reference = args.repo.parse()?;
    if repo.tag.is_some() || repo.digest.is_some() {
        return Err(format!("--repo {}: name a repository, without a tag (envlayer tags images <name>-<hash>)", args.repo).into());
    }
    let format = if args.json { Format::Json } else { args.format };
    let mut opts = args.flags.options(None, Some(DEFAULT_TTL))?;
    opts.registry_cache = super::values::registry_cache(args.flags.cache_repo.as_deref(), args.flags.verify_cache, Some(&repo), false)?;
    let reporter = Bars::new(args.flags.solve.quiet || !matches!(format, Format::Ref));
    let resolved = lifecycle::resolve(&opts, &repo, args.refresh, args.no_build, usize::from(args.push_jobs.push_jobs), &reporter).await;
    reporter.clear();
    let resolved = match resolved {
        // A miss under --no-build is an answer, not a failure: its own exit code.
        Err(e) if e.exit_code() != 1 => {
            eprintln!("{e}");
            return Ok(ExitCode::from(e.exit_code()));
        }
        other => other?,
    };
    match format {
        Format::Ref => println!("{}", resolved.reference),
        Format::Json => println!("{}", serde_json::to_string_pretty(&resolved)?),
        Format::K8s => print!("{}", envlayer::lifecycle::k8s_container(&resolved)?),
    }
    if !resolved.image.runtime_packages.is_empty() && matches!(format, Format::K8s) {
        eprintln!(
            "note: this image installs {} when the container starts, through its entrypoint: a `command:` in the pod replaces the entrypoint and skips that install. Give the program in `args:`, or start `command:` with /opt/envlayer/bin/envlayer runtime --",
            resolved.image.runtime_packages.join(", ")
        );
    }
    if !resolved.hit {
        eprintln!("built and pushed {} ({})", resolved.image.tag, resolved.reference);
    }
    Ok(ExitCode::SUCCESS)
}

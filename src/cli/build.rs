//! `envlayer build`: an environment file into an OCI layout and/or a registry.

use super::args::{check_tag, BuildFlags, PushJobs};
use super::progress::Bars;
use super::Result;
use clap::Args;
use envlayer::registry::Reference;
use std::path::PathBuf;

#[derive(Args)]
pub struct BuildArgs {
    #[command(flatten)]
    flags: BuildFlags,
    /// Where the image goes: an OCI layout folder DIR, an archive oci-archive:FILE.tar, or
    /// docker-archive:FILE.tar[:NAME:TAG] (for docker load; gzip layers only) [default: <name>.oci, or
    /// none with --push].
    #[arg(long, short, value_name = "DEST")]
    output: Option<String>,
    /// Push the image to this repository (registry/repo[:tag]); prints repo@sha256:...
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// The image's tag inside the layout.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    push_jobs: PushJobs,
}

pub async fn build(args: BuildArgs) -> Result<()> {
    check_tag("--tag", &args.tag)?;
    let push_ref: Option<Reference> = args.push.as_deref().map(str::parse).transpose()?;
    let (output, archive) = match args.output.as_deref().map(parse_output).transpose()? {
        Some((path, archive)) => (Some(path), archive),
        None => (None, None),
    };
    let output = match (output, &push_ref) {
        (Some(o), _) => Some(o),
        (None, Some(_)) => None,
        (None, None) => Some(PathBuf::from(format!("{}.oci", envlayer::build::inputs::read_spec(&args.flags.options(None, None)?)?.name))),
    };
    // A build's tag is the user's: it gets no expiry unless --ttl says so (resolve's tags do).
    let mut opts = args.flags.options(output, None)?;
    opts.tag = args.tag;
    opts.archive = archive;
    opts.registry_cache = super::values::registry_cache(args.flags.cache_repo.as_deref(), args.flags.verify_cache, push_ref.as_ref(), opts.output.is_some())?;
    let reporter = Bars::new(args.flags.solve.quiet);
    if !opts.platforms.is_empty() {
        return build_multi(&opts, &reporter, push_ref.as_ref(), args.json, usize::from(args.push_jobs.push_jobs)).await;
    }
    let built = envlayer::build(&opts, &reporter).await;
    reporter.clear();
    let built = built?;
    let summary = &built.summary;
    let mut attached = None;
    let mut published = None;
    let pushed = match &push_ref {
        Some(target) => {
            let registry = envlayer::registry::connect(target, &opts.registry.auth, &opts.registry.client).await?;
            let mut locations = envlayer::push::BlobLocations::load(&opts.cache_dir, &target.registry);
            let jobs = usize::from(args.push_jobs.push_jobs);
            let report = envlayer::push::push_image(&registry, target, &built.image, jobs, &mut locations).await?;
            if let Some((format, bytes)) = &built.sbom {
                attached = envlayer::sbom::attach_or_warn(&registry, &target.repository, &built.image, *format, bytes).await;
            }
            published = envlayer::regcache::publish_build(built.registry_cache.as_ref(), &opts.cache_dir, target, jobs).await;
            Some(report)
        }
        None => None,
    };
    if args.json {
        let mut v = serde_json::to_value(summary)?;
        v["push"] = serde_json::to_value(&pushed)?;
        v["sbom_artifact"] = serde_json::to_value(&attached)?;
        v["registry_cache_written"] = serde_json::to_value(&published)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let w = &summary.work;
    let remote = if w.remote_layers > 0 { format!(", {} from the registry cache", w.remote_layers) } else { String::new() };
    eprintln!(
        "built {} ({} packages, {} layers; {} packed, {} from cache{remote}){}",
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
    if !summary.runtime_packages.is_empty() {
        eprintln!(
            "  installs at container start: {} (the image's entrypoint is envlayer's installer, which then runs the command)",
            summary.runtime_packages.join(", ")
        );
    }
    if let Some(lock) = &summary.lock {
        eprintln!("  lock: {} (build from it with --lock)", lock.display());
    }
    if let Some(file) = summary.sbom.as_ref().and_then(|s| s.file.as_ref()) {
        eprintln!("  sbom: {}", file.display());
    }
    if let Some(a) = &attached {
        eprintln!("  sbom: {} ({})", a.reference, a.tag.as_deref().map(|t| format!("listed under the tag {t}")).unwrap_or_else(|| "found through the referrers API".into()));
    }
    if let Some(c) = &summary.registry_cache {
        eprintln!(
            "  registry cache {}: {} of {} layers found{}{}",
            c.repo,
            c.layer_hits,
            c.layer_hits + c.layer_misses,
            if c.verified > 0 { format!(", {} verified by building them here", c.verified) } else { String::new() },
            if c.rejected.is_empty() { String::new() } else { format!(", {} entries refused (see the warnings)", c.rejected.len()) }
        );
    }
    if let Some(p) = published.as_ref().filter(|p| !p.written.is_empty()) {
        eprintln!("  registry cache {}: {} entries written", p.repo, p.written.len());
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

/// `-o`: `oci-archive:FILE`, `docker-archive:FILE[:NAME:TAG]`, or a layout folder.
fn parse_output(s: &str) -> Result<(PathBuf, Option<envlayer::archive::ArchiveKind>)> {
    use envlayer::archive::ArchiveKind;
    if let Some(file) = s.strip_prefix("oci-archive:") {
        return Ok((PathBuf::from(file), Some(ArchiveKind::Oci)));
    }
    if let Some(rest) = s.strip_prefix("docker-archive:") {
        let (file, reference) = match rest.split_once(':') {
            Some((f, r)) => (f, Some(r.to_string())),
            None => (rest, None),
        };
        if let Some(r) = &reference {
            // NAME:TAG as docker load takes it: a repository path by the reference grammar (checked by the
            // reference parser, under a placeholder registry when it names none) and an OCI tag.
            let ok = r.split_once(':').is_some_and(|(name, tag)| {
                let host_named = name.split('/').next().is_some_and(|h| h.contains('.') || h == "localhost");
                let full = if host_named { format!("{name}:{tag}") } else { format!("docker.io/{name}:{tag}") };
                full.parse::<Reference>().is_ok_and(|p| p.tag.as_deref() == Some(tag) && p.repository.split('/').all(|c| !c.is_empty() && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())))
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
            });
            if !ok {
                return Err(format!("-o docker-archive:{file}:{r}: the image name must be NAME:TAG (lowercase name, an OCI tag), like myenv:1.0").into());
            }
        }
        return Ok((PathBuf::from(file), Some(ArchiveKind::Docker { reference })));
    }
    Ok((PathBuf::from(s), None))
}

/// `--platform a,b`: one image per platform, joined by an index; written as a layout and/or pushed.
async fn build_multi(opts: &envlayer::BuildOptions, reporter: &Bars, push_ref: Option<&Reference>, json: bool, jobs: usize) -> Result<()> {
    use envlayer::build::multi;
    if opts.archive.is_some() {
        return Err("a multi-platform image is written as a layout (-o DIR) or pushed (--push); not yet as an archive".into());
    }
    let built = multi::build_multi(opts, &opts.platforms, &opts.bases, reporter).await;
    reporter.clear();
    let built = built?;
    if let Some(out) = &opts.output {
        multi::write_layout(&built, out, &opts.tag)?;
    }
    let mut attached = Vec::new();
    let mut published = Vec::new();
    let pushed = match push_ref {
        Some(target) => {
            let registry = envlayer::registry::connect(target, &opts.registry.auth, &opts.registry.client).await?;
            let mut locations = envlayer::push::BlobLocations::load(&opts.cache_dir, &target.registry);
            let report = multi::push(&registry, target, &built, jobs, &mut locations).await?;
            for (_, b) in &built.builds {
                if let Some((format, bytes)) = &b.sbom {
                    attached.extend(envlayer::sbom::attach_or_warn(&registry, &target.repository, &b.image, *format, bytes).await);
                }
                published.extend(envlayer::regcache::publish_build(b.registry_cache.as_ref(), &opts.cache_dir, target, jobs).await);
            }
            Some(report)
        }
        None => None,
    };
    if json {
        let platforms: Vec<serde_json::Value> = built.builds.iter().map(|(p, b)| serde_json::json!({"platform": p.as_str(), "build": b.summary})).collect();
        let v = serde_json::json!({"index_digest": built.digest().to_string(), "identity": built.identity, "output": opts.output, "platforms": platforms, "push": pushed, "sbom_artifacts": attached, "registry_cache_written": published});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (p, b) in &built.builds {
        eprintln!("built {} for {p}: {} ({} packages, {} layers)", b.summary.name, b.summary.manifest_digest, b.summary.packages.len(), b.summary.layers.len());
    }
    match pushed {
        Some(p) => {
            eprintln!("pushed the index and {} images: {} blobs uploaded ({} bytes)", built.builds.len(), p.uploaded.len(), p.uploaded_bytes);
            println!("{}", p.reference);
        }
        None => println!("{}", built.digest()),
    }
    Ok(())
}

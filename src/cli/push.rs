//! `envlayer push`: an image from an OCI layout to a registry.

use super::args::{default_cache_dir, parse_base, PushJobs, RegistryArgs};
use super::Result;
use clap::Args;
use envlayer::build::BaseRef;
use envlayer::lifecycle;
use envlayer::registry::Reference;
use std::path::PathBuf;

#[derive(Args)]
pub struct PushArgs {
    /// The OCI layout (DIR or DIR:TAG), as `envlayer build -o DIR` wrote it.
    #[arg(value_name = "LAYOUT")]
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
    #[command(flatten)]
    push_jobs: PushJobs,
}

pub async fn push(args: PushArgs) -> Result<()> {
    let target: Reference = args.reference.parse()?;
    let not_layout = || format!("LAYOUT {:?}: no OCI layout there; push's first argument is the folder `envlayer build -o DIR` wrote (DIR or DIR:TAG)", args.layout);
    // The word `scratch` means no base for --base; here it can only be a folder.
    let layout = if args.layout == "scratch" { "./scratch" } else { args.layout.as_str() };
    let (dir, tag) = match parse_base(layout).map_err(|_| not_layout())? {
        BaseRef::Layout { layout, tag } if layout.join("index.json").is_file() => (layout, tag),
        _ => return Err(not_layout().into()),
    };
    let settings = args.registry.settings();
    let cache = args.cache_dir.unwrap_or_else(default_cache_dir);
    warn_expiry(&dir, tag.as_deref(), &target);
    let report = lifecycle::push_layout(&dir, tag.as_deref(), &target, &settings, &cache, usize::from(args.push_jobs.push_jobs)).await?;
    let attached = attach_sbom(&dir, tag.as_deref(), &target, &settings).await?;
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["sbom_artifact"] = serde_json::to_value(&attached)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!("pushed: {} blobs uploaded ({} bytes), {} mounted, {} already there", report.uploaded.len(), report.uploaded_bytes, report.mounted, report.existing);
        for a in &attached {
            eprintln!("sbom: {} ({})", a.reference, a.artifact_type);
        }
        println!("{}", report.reference);
    }
    Ok(())
}

/// An image built with a TTL carries Quay's expiry label in its config: pushed to a tag the user names,
/// Quay expires that tag. Said before the push (the image is pushed as it was built).
fn warn_expiry(dir: &std::path::Path, tag: Option<&str>, target: &Reference) {
    let Ok(image) = envlayer::image::read_layout_image(dir, tag) else { return };
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap_or_default();
    if let (Some(ttl), Some(to)) = (config["config"]["Labels"][envlayer::keys::LABEL_QUAY_EXPIRES].as_str(), &target.tag) {
        eprintln!(
            "warning: this image was built with --ttl {}: Quay will expire the tag {} after that, and images built FROM it inherit the label; rebuild without --ttl for a tag that stays",
            envlayer::net::escape(ttl),
            envlayer::net::escape(to)
        );
    }
}

/// Attaches the SBOMs the build wrote beside the layout (`DIR.spdx.json`, `DIR.cdx.json`) that describe
/// the image pushed; an SBOM of another image is left out.
async fn attach_sbom(
    dir: &std::path::Path,
    tag: Option<&str>,
    target: &Reference,
    settings: &envlayer::build::RegistrySettings,
) -> Result<Vec<envlayer::referrers::Attached>> {
    use envlayer::sbom::{self, SbomFormat};
    let image = envlayer::image::read_layout_image(dir, tag)?;
    let mut out = Vec::new();
    for format in [SbomFormat::Spdx, SbomFormat::Cyclonedx] {
        let path = sbom::beside(dir, format);
        let small = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() < (64 << 20));
        let Some(bytes) = small.then(|| std::fs::read(&path).ok()).flatten() else { continue };
        if sbom::described_image(&bytes) == Some((format, image.digest().to_string())) {
            let registry = envlayer::registry::connect(target, &settings.auth, &settings.client).await?;
            out.extend(sbom::attach_or_warn(&registry, &target.repository, &image, format, &bytes).await);
        }
    }
    Ok(out)
}

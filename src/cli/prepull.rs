//! `envlayer prepull`: a DaemonSet that pre-pulls the fresh environment images of a repository.

use super::repo::RepoArgs;
use super::Result;
use clap::Args;
use envlayer::prepull::{self, PrepullOptions};

#[derive(Args)]
pub struct PrepullArgs {
    /// The repository, `--json` (the images by digest instead of the DaemonSet), registry access, clock.
    #[command(flatten)]
    repo: RepoArgs,
    /// The DaemonSet's namespace [default: none: kubectl's current one].
    #[arg(long)]
    namespace: Option<String>,
    /// Only nodes with this label (KEY=VALUE); repeatable: all must match.
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    selectors: Vec<String>,
    /// The DaemonSet's name.
    #[arg(long, default_value = "envlayer-prepull")]
    name: String,
    /// The image whose static /bin/busybox runs the no-op in each pulled image.
    #[arg(long, value_name = "IMAGE", default_value = "busybox:1.36.1-musl")]
    noop_image: String,
    /// The image of the container that keeps the pod running.
    #[arg(long, value_name = "IMAGE", default_value = "registry.k8s.io/pause:3.10")]
    pause_image: String,
}

pub async fn prepull(args: PrepullArgs) -> Result<()> {
    let selector = args
        .selectors
        .iter()
        .map(|s| s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("--selector {s:?}: expected KEY=VALUE")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let opts = PrepullOptions { name: args.name, namespace: args.namespace, selector, noop_image: args.noop_image, pause_image: args.pause_image };
    prepull::check(&opts)?;
    let (repo, images) = args.repo.images().await?;
    let fresh = prepull::fresh(&images);
    if args.repo.json {
        let list: Vec<serde_json::Value> = fresh.iter().map(|i| serde_json::json!({"name": i.name, "tag": i.tag, "reference": i.reference, "digest": i.digest})).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if fresh.is_empty() {
        eprintln!("warning: no fresh environment image in {repo}: the DaemonSet pulls nothing but its helpers");
    }
    // One document per architecture, separated as kubectl reads several.
    let docs = prepull::daemonsets(&fresh, &opts);
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            println!("---");
        }
        print!("{}", serde_yaml::to_string(d)?);
    }
    eprintln!("{} image(s) of {repo}; apply with: kubectl apply -f -", fresh.len());
    Ok(())
}

//! Argument parsing and dispatch. Each command's work is in the library; this only turns flags into
//! options and results into output (stdout: the result; stderr: progress, warnings, errors).

mod progress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use envlayer::build::{BaseRef, BuildOptions, RegistrySettings, DEFAULT_MAX_LAYERS};
use envlayer::registry::{AuthSources, ClientOptions, Reference};
use envlayer::spec::EnvSpec;
use envlayer::Compression;
use rattler_conda_types::Subdir;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

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
    Build(BuildArgs),
    /// Push an image from an OCI layout to a registry; prints repo@sha256:...
    Push(PushArgs),
    /// Write the small example channel that examples/environment.yaml uses.
    ExampleChannel {
        /// Where to write the channel.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    Gzip,
    Zstd,
}

#[derive(Args, Clone)]
struct RegistryArgs {
    /// A registry (host:port) where plain HTTP is allowed when HTTPS fails; loopback always is. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure: Vec<String>,
    /// A PEM file of CA certificates to trust for registries, besides the system's. Repeatable.
    #[arg(long = "registry-ca", value_name = "FILE", env = "ENVLAYER_REGISTRY_CA")]
    ca: Vec<PathBuf>,
    /// Parallel blob uploads.
    #[arg(long = "push-jobs", default_value_t = 4)]
    push_jobs: usize,
}

impl RegistryArgs {
    fn settings(&self) -> RegistrySettings {
        RegistrySettings {
            auth: AuthSources::from_env(),
            client: ClientOptions { insecure: self.insecure.clone(), ca_certs: self.ca.clone(), ..ClientOptions::default() },
        }
    }
}

#[derive(Args)]
struct BuildArgs {
    /// The environment file (conda's environment.yaml format).
    env_file: PathBuf,
    /// The environment's path in the image [default: /opt/conda/envs/<name>].
    #[arg(long)]
    prefix: Option<String>,
    /// The conda platform of the image.
    #[arg(long, default_value = "linux-64")]
    platform: String,
    /// A virtual package of the machine the image runs on, as __name=version[=build]; repeatable.
    /// Defaults: __unix, __linux=5.10, __glibc=2.28, __archspec=1=<arch>. E.g. --virtual-package __cuda=12.4
    #[arg(long = "virtual-package", value_name = "SPEC")]
    virtual_packages: Vec<String>,
    /// The base image: an OCI layout (DIR, DIR:TAG or oci:DIR[:TAG]) or a registry image
    /// (registry.example.com/repo:tag or docker://...).
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// The OCI layout directory to write [default: <name>.oci, or none with --push].
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Push the image to this repository (registry/repo[:tag]); prints repo@sha256:...
    #[arg(long, value_name = "REF")]
    push: Option<String>,
    /// The image's tag inside the layout.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Cache of packages, layers and repodata [default: $XDG_CACHE_HOME/envlayer or ~/.cache/envlayer].
    #[arg(long, env = "ENVLAYER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Codec,
    /// Compression level [default: 6 for gzip, 3 for zstd].
    #[arg(long)]
    compression_level: Option<i32>,
    /// The most layers the image may have, base layers included; packages share layers beyond it.
    #[arg(long, default_value_t = DEFAULT_MAX_LAYERS)]
    max_layers: usize,
    /// Install exactly what this lock file (rattler_lock format) lists, with no solve.
    #[arg(long)]
    lock: Option<PathBuf>,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
    /// How many layers to build at once [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
struct PushArgs {
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ENVLAYER_LOG").unwrap_or_else(|_| "envlayer=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = match cli.command {
        Command::Build(args) => runtime.block_on(build(args)),
        Command::Push(args) => runtime.block_on(push(args)),
        Command::ExampleChannel { dir } => runtime
            .block_on(envlayer::synth::write_channel(&dir, &envlayer::synth::example_packages()))
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

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("envlayer")
}

/// `DIR`, `DIR:TAG`, `oci:DIR[:TAG]` are layouts; `docker://REF` and anything else that parses as a
/// reference with a registry host is a registry image.
fn parse_base(s: &str) -> Result<BaseRef> {
    let layout = |p: &str| -> BaseRef {
        let as_dir = PathBuf::from(p);
        match p.rsplit_once(':') {
            Some((dir, tag)) if !as_dir.exists() && !tag.contains('/') => BaseRef::Layout { layout: dir.into(), tag: Some(tag.into()) },
            _ => BaseRef::Layout { layout: as_dir, tag: None },
        }
    };
    if let Some(p) = s.strip_prefix("oci:") {
        return Ok(layout(p));
    }
    if s.starts_with("docker://") {
        return Ok(BaseRef::Registry(s.parse()?));
    }
    let dir_part = s.rsplit_once(':').map_or(s, |(d, _)| d);
    if PathBuf::from(s).exists() || PathBuf::from(dir_part).join("index.json").is_file() {
        return Ok(layout(s));
    }
    let first = s.split('/').next().unwrap_or("");
    if s.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        return Ok(BaseRef::Registry(s.parse()?));
    }
    Err(format!("--base {s:?} is neither an OCI layout on disk nor a registry image (registry.example.com/repo:tag)").into())
}

async fn build(args: BuildArgs) -> Result<()> {
    let platform = Subdir::from_str(&args.platform).map_err(|e| format!("--platform {}: {e}", args.platform))?;
    let push_ref: Option<Reference> = args.push.as_deref().map(str::parse).transpose()?;
    let output = match (args.output, &push_ref) {
        (Some(o), _) => Some(o),
        (None, Some(_)) => None,
        (None, None) => Some(PathBuf::from(format!("{}.oci", EnvSpec::from_path(&args.env_file)?.name))),
    };
    let mut opts = BuildOptions::new(&args.env_file, PathBuf::new(), args.cache_dir.unwrap_or_else(default_cache_dir));
    opts.output = output;
    opts.prefix = args.prefix;
    opts.platform = platform;
    opts.virtual_packages = args.virtual_packages;
    opts.base = args.base.as_deref().map(parse_base).transpose()?;
    opts.registry = args.registry.settings();
    opts.tag = args.tag;
    opts.compression = match (args.compression, args.compression_level) {
        (Codec::Gzip, None) => Compression::GZIP_DEFAULT,
        (Codec::Gzip, Some(l)) if (0..=9).contains(&l) => Compression::Gzip(l as u32),
        (Codec::Zstd, None) => Compression::ZSTD_DEFAULT,
        (Codec::Zstd, Some(l)) if (1..=22).contains(&l) => Compression::Zstd(l),
        (_, Some(l)) => return Err(format!("--compression-level {l} is out of range (gzip 0-9, zstd 1-22)").into()),
    };
    opts.max_layers = args.max_layers;
    opts.lock = args.lock;
    if let Some(jobs) = args.jobs {
        opts.jobs = jobs.max(1);
    }
    opts.source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => Some(s.parse().map_err(|_| format!("SOURCE_DATE_EPOCH={s:?} is not a number"))?),
        _ => None,
    };
    let reporter = progress::Bars::new(args.quiet);
    let built = envlayer::build(&opts, &reporter).await;
    reporter.clear();
    let built = built?;
    let summary = &built.summary;
    let pushed = match &push_ref {
        Some(target) => {
            let registry = envlayer::registry::connect(target, &opts.registry.auth, &opts.registry.client).await?;
            let mut locations = envlayer::push::BlobLocations::load(&opts.cache_dir, &target.registry);
            Some(envlayer::push::push_image(&registry, target, &built.image, args.registry.push_jobs, &mut locations).await?)
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

async fn push(args: PushArgs) -> Result<()> {
    let target: Reference = args.reference.parse()?;
    let (dir, tag) = match parse_base(&args.layout)? {
        BaseRef::Layout { layout, tag } => (layout, tag),
        BaseRef::Registry(_) => return Err(format!("{} is not an OCI layout on disk", args.layout).into()),
    };
    let mut image = envlayer::image::read_layout_image(&dir, tag.as_deref())?;
    // A base named by the image's io.envlayer.base label is mounted from its repository when it is on
    // the same registry, rather than uploaded again.
    let config: serde_json::Value = serde_json::from_slice(&image.config)?;
    if let Some(base) = config["config"]["Labels"][envlayer::image::LABEL_BASE].as_str() {
        if let Ok(r) = base.parse::<Reference>() {
            let registry = envlayer::registry::connect(&r, &AuthSources::from_env(), &ClientOptions::default()).await;
            if let Ok(registry) = registry {
                if let Ok(b) = envlayer::registry::read_base(&registry, &r, "linux", config["architecture"].as_str().unwrap_or("amd64")).await {
                    for blob in image.layers.iter_mut() {
                        if let Some(remote) = b.layers.iter().find(|l| l.digest == blob.digest).and_then(|l| l.remote.clone()) {
                            blob.remote = Some(remote);
                        }
                    }
                }
            }
        }
    }
    let settings = args.registry.settings();
    let registry = envlayer::registry::connect(&target, &settings.auth, &settings.client).await?;
    let cache = args.cache_dir.unwrap_or_else(default_cache_dir);
    let mut locations = envlayer::push::BlobLocations::load(&cache, &target.registry);
    let report = envlayer::push::push_image(&registry, &target, &image, args.registry.push_jobs, &mut locations).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!("pushed: {} blobs uploaded ({} bytes), {} mounted, {} already there", report.uploaded.len(), report.uploaded_bytes, report.mounted, report.existing);
        println!("{}", report.reference);
    }
    Ok(())
}

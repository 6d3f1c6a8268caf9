//! Virtual models (routing policies): validation of the category -> expert mapping
//! against the experts and the router's labels.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::raw::RawVirtualModel;
use super::{invalid, Capability, ConfigError, ExpertConfig};

/// The category key that maps every category not listed explicitly.
pub const CATCH_ALL: &str = "*";
/// `router = "centroid"` builds the router from the policy's own examples.
pub const CENTROID_ROUTER: &str = "centroid";

#[derive(Debug, Clone, PartialEq)]
pub enum RouterRef {
    /// A trained router folder `<routers_dir>/<name>`; `version` is its `router.toml`'s
    /// (a hash of its weights, rewritten by `router train`), so a retrained router is a
    /// new config version and a reload loads it.
    Trained { name: String, dir: std::path::PathBuf, labels: Vec<String>, version: String },
    /// Categories described by example prompts; adding one needs no retraining.
    Centroid { examples: Vec<(String, Vec<String>)> },
}

impl RouterRef {
    pub fn labels(&self) -> Vec<String> {
        match self {
            RouterRef::Trained { labels, .. } => labels.clone(),
            RouterRef::Centroid { examples } => examples.iter().map(|(l, _)| l.clone()).collect(),
        }
    }
}

/// When the classifier is unsure, the fallback expert takes the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uncertainty {
    pub min_confidence: f32,
    pub max_entropy: f32,
}

impl Default for Uncertainty {
    /// Off: 0 confidence and entropy 1 never trigger.
    fn default() -> Self {
        Self { min_confidence: 0.0, max_entropy: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopP {
    pub p: f32,
    /// Strongest first.
    pub strength: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub category: String,
    pub expert: String,
    pub percent: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualModelConfig {
    pub name: String,
    /// The file that defines it.
    pub file: String,
    pub router: Option<RouterRef>,
    pub experts: Vec<String>,
    /// An expert or another virtual model.
    pub fallback: Option<String>,
    pub categories: BTreeMap<String, Vec<String>>,
    pub uncertainty: Uncertainty,
    pub top_p: Option<TopP>,
    pub splits: Vec<Split>,
    /// What a request does when its local expert is not hot (only with `[tiers]`).
    pub not_hot: NotHot,
}

/// How long a request waits for a local expert's promotion by default: a cold 250 MB
/// model loads in ~1-3 s on two loaded cores; past 20 s a client is better served by an error.
pub const DEFAULT_PROMOTE_TIMEOUT_MS: u64 = 20_000;

/// What a request to a local expert that is not hot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHot {
    /// Wait for the promotion, up to this long (then try the next expert).
    Wait(std::time::Duration),
    /// Start the promotion in the background and try the next expert now; the last expert
    /// of the list waits, so a request is never refused only because every expert is cold.
    Fallback { last_resort_wait: std::time::Duration },
}

impl Default for NotHot {
    fn default() -> Self {
        NotHot::Wait(std::time::Duration::from_millis(DEFAULT_PROMOTE_TIMEOUT_MS))
    }
}

fn not_hot(file: &str, path: &str, mode: Option<&str>, timeout_ms: Option<u64>) -> Result<NotHot, ConfigError> {
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_PROMOTE_TIMEOUT_MS);
    if timeout_ms == 0 {
        return Err(invalid(file, format!("{path}.promote_timeout_ms"), "must be greater than 0"));
    }
    let t = std::time::Duration::from_millis(timeout_ms);
    match mode {
        None | Some("wait") => Ok(NotHot::Wait(t)),
        Some("fallback") => Ok(NotHot::Fallback { last_resort_wait: t }),
        Some(other) => {
            Err(invalid(file, format!("{path}.not_hot"), format!("expected \"wait\" or \"fallback\", got {other:?}")))
        }
    }
}

fn check_expert(file: &str, path: &str, name: &str, experts: &[ExpertConfig]) -> Result<(), ConfigError> {
    match experts.iter().find(|e| e.name == name) {
        None => Err(invalid(file, path, format!("unknown expert {name:?}"))),
        Some(e) if !e.supports(Capability::Chat) => {
            Err(invalid(file, path, format!("expert {name:?} does not declare chat")))
        }
        Some(_) => Ok(()),
    }
}

fn check_list(file: &str, path: &str, list: &[String], experts: &[ExpertConfig]) -> Result<(), ConfigError> {
    if list.is_empty() {
        return Err(invalid(file, path, "needs at least one expert"));
    }
    for (j, name) in list.iter().enumerate() {
        check_expert(file, &format!("{path}[{j}]"), name, experts)?;
    }
    Ok(())
}

fn unit_interval(file: &str, path: &str, v: f32) -> Result<f32, ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(file, path, format!("must be between 0 and 1, got {v}")))
    }
}

/// Reads the label list and the version of `<routers_dir>/<name>/router.toml`.
fn router_meta(file: &str, path: &str, routers_dir: &Path, name: &str) -> Result<(Vec<String>, String), ConfigError> {
    let toml_path = routers_dir.join(name).join("router.toml");
    let text = std::fs::read_to_string(&toml_path)
        .map_err(|e| invalid(file, path, format!("router {name:?}: cannot read {}: {e}", toml_path.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| invalid(file, path, format!("router {name:?}: {} is not valid TOML: {e}", toml_path.display())))?;
    let labels = table
        .get("labels")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>());
    let version = table.get("version").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    match labels {
        Some(l) if !l.is_empty() => Ok((l, version)),
        _ => Err(invalid(file, path, format!("router {name:?}: {} has no `labels` list", toml_path.display()))),
    }
}

pub(super) fn validate(
    file: &str,
    path: &str,
    m: RawVirtualModel,
    experts: &[ExpertConfig],
    routers_dir: &Path,
) -> Result<VirtualModelConfig, ConfigError> {
    if m.name.is_empty() || m.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            file,
            format!("{path}.name"),
            format!("must be non-empty without spaces, got {:?}", m.name),
        ));
    }
    if !m.experts.is_empty() || m.router.is_none() {
        check_list(file, &format!("{path}.experts"), &m.experts, experts)?;
    }
    let router = match m.router.as_deref() {
        None => {
            for (present, key) in [
                (!m.categories.is_empty(), "categories"),
                (!m.centroid.is_empty(), "centroid"),
                (m.top_p.is_some(), "top_p"),
                (!m.split.is_empty(), "split"),
            ] {
                if present {
                    return Err(invalid(file, format!("{path}.{key}"), "needs a `router` to choose categories"));
                }
            }
            None
        }
        Some(CENTROID_ROUTER) => {
            if m.centroid.is_empty() {
                return Err(invalid(
                    file,
                    format!("{path}.centroid"),
                    "router = \"centroid\" needs example prompts per category",
                ));
            }
            for (label, ex) in &m.centroid {
                if ex.iter().all(|e| e.trim().is_empty()) {
                    return Err(invalid(file, format!("{path}.centroid.{label}"), "needs at least one example prompt"));
                }
            }
            Some(RouterRef::Centroid { examples: m.centroid.into_iter().collect() })
        }
        Some(name) => {
            if !m.centroid.is_empty() {
                return Err(invalid(file, format!("{path}.centroid"), "is only for router = \"centroid\""));
            }
            let (labels, version) = router_meta(file, &format!("{path}.router"), routers_dir, name)?;
            Some(RouterRef::Trained { name: name.to_string(), dir: routers_dir.join(name), labels, version })
        }
    };
    if let Some(r) = &router {
        let labels = r.labels();
        for (cat, list) in &m.categories {
            let key = format!("{path}.categories.{cat}");
            if cat != CATCH_ALL && !labels.contains(cat) {
                return Err(invalid(
                    file,
                    key,
                    format!("the router has no category {cat:?} (it has: {})", labels.join(", ")),
                ));
            }
            check_list(file, &key, list, experts)?;
        }
        if !m.categories.contains_key(CATCH_ALL) {
            let unmapped: Vec<&str> =
                labels.iter().filter(|l| !m.categories.contains_key(*l)).map(String::as_str).collect();
            if !unmapped.is_empty() {
                return Err(invalid(
                    file,
                    format!("{path}.categories"),
                    format!(
                        "categories left unmapped: {} (map them, or add \"*\" as an explicit catch-all)",
                        unmapped.join(", ")
                    ),
                ));
            }
        }
        if m.fallback.is_none() {
            return Err(invalid(
                file,
                format!("{path}.fallback"),
                "a routed model needs a fallback for uncertain inputs",
            ));
        }
    }
    let uncertainty = Uncertainty {
        min_confidence: unit_interval(
            file,
            &format!("{path}.uncertainty.min_confidence"),
            m.uncertainty.min_confidence.unwrap_or(0.0),
        )?,
        max_entropy: unit_interval(
            file,
            &format!("{path}.uncertainty.max_entropy"),
            m.uncertainty.max_entropy.unwrap_or(1.0),
        )?,
    };
    let top_p = match m.top_p {
        None => None,
        Some(t) => {
            if !(t.p > 0.0 && t.p <= 1.0) {
                return Err(invalid(file, format!("{path}.top_p.p"), format!("must be in (0, 1], got {}", t.p)));
            }
            for (j, name) in t.strength.iter().enumerate() {
                check_expert(file, &format!("{path}.top_p.strength[{j}]"), name, experts)?;
            }
            Some(TopP { p: t.p, strength: if t.strength.is_empty() { m.experts.clone() } else { t.strength } })
        }
    };
    let mut splits = Vec::with_capacity(m.split.len());
    for (j, sp) in m.split.into_iter().enumerate() {
        let key = format!("{path}.split[{j}]");
        let labels = router.as_ref().map(RouterRef::labels).unwrap_or_default();
        if !labels.contains(&sp.category) {
            return Err(invalid(
                file,
                format!("{key}.category"),
                format!("the router has no category {:?}", sp.category),
            ));
        }
        check_expert(file, &format!("{key}.expert"), &sp.expert, experts)?;
        if !(sp.percent > 0.0 && sp.percent <= 100.0) {
            return Err(invalid(file, format!("{key}.percent"), format!("must be in (0, 100], got {}", sp.percent)));
        }
        splits.push(Split { category: sp.category, expert: sp.expert, percent: sp.percent });
    }
    let not_hot = not_hot(file, path, m.not_hot.as_deref(), m.promote_timeout_ms)?;
    Ok(VirtualModelConfig {
        not_hot,
        name: m.name,
        file: file.to_string(),
        router,
        experts: m.experts,
        fallback: m.fallback,
        categories: m.categories,
        uncertainty,
        top_p,
        splits,
    })
}

/// A fallback names an expert or another virtual model; a chain of models must end in
/// an expert.
pub(super) fn check_fallback_cycles(
    models: &[VirtualModelConfig],
    experts: &[ExpertConfig],
) -> Result<(), ConfigError> {
    let by_name: HashMap<&str, &VirtualModelConfig> = models.iter().map(|m| (m.name.as_str(), m)).collect();
    for m in models {
        let Some(first) = &m.fallback else { continue };
        let mut chain = vec![m.name.as_str()];
        let mut next = first.as_str();
        loop {
            if experts.iter().any(|e| e.name == next) {
                check_expert(&m.file, &format!("models.{}.fallback", m.name), next, experts)?;
                break;
            }
            let Some(vm) = by_name.get(next) else {
                return Err(invalid(
                    &m.file,
                    format!("models.{}.fallback", m.name),
                    format!("unknown expert or model {next:?}"),
                ));
            };
            if chain.contains(&next) {
                chain.push(next);
                return Err(invalid(
                    &m.file,
                    format!("models.{}.fallback", m.name),
                    format!("fallbacks form a cycle: {}", chain.join(" -> ")),
                ));
            }
            chain.push(next);
            match &vm.fallback {
                Some(f) => next = f.as_str(),
                // A model without a fallback routes by its own list: the chain ends.
                None => break,
            }
        }
    }
    Ok(())
}

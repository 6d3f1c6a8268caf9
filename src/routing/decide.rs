//! The second step of Composition-of-Experts routing: category probabilities -> an
//! ordered expert list, with the reasons. Pure functions of the policy, the
//! probabilities and a hash of the request, so a decision never depends on other
//! requests in flight.

use crate::config::{VirtualModelConfig, CATCH_ALL};

/// What the classifier said, aligned with the router's labels.
#[derive(Debug, Clone)]
pub struct Probabilities<'a> {
    pub labels: &'a [String],
    pub probs: &'a [f32],
}

impl Probabilities<'_> {
    pub fn top(&self) -> (usize, f32) {
        self.probs
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |best, (i, p)| if p > best.1 { (i, p) } else { best })
    }

    /// Entropy divided by its maximum (ln K): 0 = certain, 1 = uniform.
    pub fn normalized_entropy(&self) -> f32 {
        let k = self.probs.len();
        if k < 2 {
            return 0.0;
        }
        let h: f32 = self.probs.iter().filter(|&&p| p > 0.0).map(|&p| -p * p.ln()).sum();
        (h / (k as f32).ln()).clamp(0.0, 1.0)
    }
}

/// The outcome of the mapping step.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub experts: Vec<String>,
    pub category: Option<String>,
    pub confidence: Option<f32>,
    pub reasons: Vec<String>,
    /// Set when the uncertainty rule (or a missing classification) sent the request to
    /// the fallback.
    pub fallback: bool,
}

fn push_unique(list: &mut Vec<String>, items: &[String]) {
    for i in items {
        if !list.contains(i) {
            list.push(i.clone());
        }
    }
}

fn category_experts<'a>(policy: &'a VirtualModelConfig, category: &str) -> &'a [String] {
    policy.categories.get(category).or_else(|| policy.categories.get(CATCH_ALL)).map_or(&policy.experts, |v| v)
}

/// Maps probabilities (None: no classification available, with the reason) to experts.
///
/// `request_hash` places a request in a traffic split deterministically: the same
/// request always lands on the same side.
pub fn map(
    policy: &VirtualModelConfig,
    probs: Result<&Probabilities<'_>, &str>,
    request_hash: u64,
    fallback_experts: &dyn Fn(&str) -> Vec<String>,
) -> Mapped {
    let probs = match probs {
        Err(why) => {
            let mut experts = match &policy.fallback {
                Some(f) => fallback_experts(f),
                None => Vec::new(),
            };
            push_unique(&mut experts, &policy.experts);
            let reason = match &policy.fallback {
                Some(f) => format!("{why}: fallback {f:?}"),
                None => format!("{why}: static expert list"),
            };
            return Mapped {
                experts,
                category: None,
                confidence: None,
                reasons: vec![reason],
                fallback: policy.fallback.is_some(),
            };
        }
        Ok(p) => p,
    };
    let (top, confidence) = probs.top();
    let category = probs.labels.get(top).cloned().unwrap_or_default();
    let entropy = probs.normalized_entropy();
    let mut reasons =
        vec![format!("classified as {category:?} with p={confidence:.3} (normalized entropy {entropy:.3})")];
    let u = policy.uncertainty;
    let unsure = if confidence < u.min_confidence {
        Some(format!("p={confidence:.3} is below min_confidence {}", u.min_confidence))
    } else if entropy > u.max_entropy {
        Some(format!("entropy {entropy:.3} is above max_entropy {}", u.max_entropy))
    } else {
        None
    };
    if let (Some(why), Some(fb)) = (unsure, &policy.fallback) {
        let mut experts = fallback_experts(fb);
        push_unique(&mut experts, category_experts(policy, &category));
        reasons.push(format!("uncertain ({why}): fallback {fb:?}"));
        return Mapped { experts, category: Some(category), confidence: Some(confidence), reasons, fallback: true };
    }
    let mut experts = Vec::new();
    if let Some(tp) = &policy.top_p {
        let mut order: Vec<usize> = (0..probs.probs.len()).collect();
        order.sort_by(|&a, &b| probs.probs[b].total_cmp(&probs.probs[a]));
        let mut mass = 0.0;
        let mut set = Vec::new();
        for i in order {
            set.push(i);
            mass += probs.probs[i];
            if mass >= tp.p {
                break;
            }
        }
        let rank = |e: &str| tp.strength.iter().position(|s| s == e).unwrap_or(usize::MAX);
        let strongest = set
            .iter()
            .filter_map(|&i| probs.labels.get(i).and_then(|l| category_experts(policy, l).first()))
            .min_by_key(|e| rank(e));
        if let Some(e) = strongest {
            let names: Vec<&str> = set.iter().filter_map(|&i| probs.labels.get(i).map(String::as_str)).collect();
            reasons.push(format!("top_p {}: categories {} -> strongest expert {e:?}", tp.p, names.join(", ")));
            experts.push(e.clone());
        }
    }
    let mapped = category_experts(policy, &category);
    if experts.is_empty() {
        let via = if policy.categories.contains_key(&category) { "" } else { " (catch-all)" };
        reasons.push(format!("category {category:?} maps to {}{via}", mapped.join(", ")));
    }
    push_unique(&mut experts, mapped);
    for sp in policy.splits.iter().filter(|s| s.category == category) {
        let bucket = (request_hash % 10_000) as f32 / 100.0;
        if bucket < sp.percent {
            experts.retain(|e| e != &sp.expert);
            experts.insert(0, sp.expert.clone());
            reasons.push(format!("traffic split: {}% of {category:?} goes to {:?}", sp.percent, sp.expert));
        }
    }
    Mapped { experts, category: Some(category), confidence: Some(confidence), reasons, fallback: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouterRef, Split, TopP, Uncertainty};
    use std::collections::BTreeMap;

    fn labels() -> Vec<String> {
        ["coding", "math", "general"].map(String::from).to_vec()
    }

    fn policy() -> VirtualModelConfig {
        let mut categories = BTreeMap::new();
        categories.insert("coding".to_string(), vec!["big".to_string(), "small".to_string()]);
        categories.insert("*".to_string(), vec!["small".to_string()]);
        VirtualModelConfig {
            name: "m".into(),
            file: "t.toml".into(),
            router: Some(RouterRef::Trained {
                name: "r".into(),
                dir: "routers/r".into(),
                labels: labels(),
                version: String::new(),
            }),
            experts: vec![],
            fallback: Some("general".into()),
            categories,
            uncertainty: Uncertainty { min_confidence: 0.5, max_entropy: 0.9 },
            top_p: None,
            splits: vec![],
            not_hot: Default::default(),
        }
    }

    fn run(p: &VirtualModelConfig, probs: &[f32], hash: u64) -> Mapped {
        let l = labels();
        map(p, Ok(&Probabilities { labels: &l, probs }), hash, &|f| vec![f.to_string()])
    }

    #[test]
    fn a_confident_category_maps_to_its_experts() {
        let m = run(&policy(), &[0.9, 0.05, 0.05], 0);
        assert_eq!(m.experts, ["big", "small"]);
        assert_eq!(m.category.as_deref(), Some("coding"));
        assert!(!m.fallback);
    }

    #[test]
    fn unmapped_categories_use_the_catch_all() {
        let m = run(&policy(), &[0.05, 0.9, 0.05], 0);
        assert_eq!(m.experts, ["small"]);
        assert!(m.reasons.iter().any(|r| r.contains("catch-all")));
    }

    #[test]
    fn low_confidence_or_high_entropy_goes_to_the_fallback() {
        let m = run(&policy(), &[0.45, 0.35, 0.2], 0);
        assert!(m.fallback);
        assert_eq!(m.experts[0], "general");
        let mut p = policy();
        p.uncertainty = Uncertainty { min_confidence: 0.0, max_entropy: 0.5 };
        let m = run(&p, &[0.6, 0.3, 0.1], 0);
        assert!(m.fallback, "{m:?}");
        assert!(m.reasons.iter().any(|r| r.contains("max_entropy")));
    }

    #[test]
    fn top_p_picks_the_strongest_expert_of_the_plausible_categories() {
        let mut p = policy();
        p.uncertainty = Uncertainty::default();
        p.top_p = Some(TopP { p: 0.8, strength: vec!["big".into(), "small".into()] });
        // math (catch-all -> small) is on top, but coding is plausible and maps to big.
        let m = run(&p, &[0.35, 0.55, 0.10], 0);
        assert_eq!(m.experts[0], "big");
        // With p small enough only math counts.
        p.top_p = Some(TopP { p: 0.5, strength: vec!["big".into(), "small".into()] });
        assert_eq!(run(&p, &[0.35, 0.55, 0.10], 0).experts[0], "small");
    }

    #[test]
    fn a_split_is_deterministic_per_request_and_honours_the_share() {
        let mut p = policy();
        p.splits = vec![Split { category: "coding".into(), expert: "cand".into(), percent: 25.0 }];
        let to_candidate = (0..10_000u64).filter(|h| run(&p, &[0.9, 0.05, 0.05], *h).experts[0] == "cand").count();
        assert_eq!(to_candidate, 2_500);
        assert_eq!(run(&p, &[0.9, 0.05, 0.05], 42), run(&p, &[0.9, 0.05, 0.05], 42));
    }

    #[test]
    fn without_a_classification_the_fallback_serves() {
        let l = labels();
        let _ = &l;
        let m = map(&policy(), Err("classifier queue full"), 0, &|f| vec![f.to_string()]);
        assert_eq!(m.experts, ["general"]);
        assert!(m.fallback);
        assert!(m.reasons[0].contains("queue full"));
    }
}

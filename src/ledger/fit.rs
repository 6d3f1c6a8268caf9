//! `triage policy fit`: choose one expert per category to maximize traffic-weighted
//! accuracy under a budget (mean cost per request, or mean active parameters).
//!
//! This is a multiple-choice knapsack. It is solved exactly by building the Pareto
//! frontier of partial assignments category by category: a partial assignment that costs
//! more and scores no better than another can never be part of a better whole, so
//! dropping dominated points loses nothing. The best point within budget on the final
//! frontier is the optimum, and the frontier itself is what the command prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::report::{human_count, Accuracy, GroupBy, ReportQuery, NONE_LABEL};
use super::{Ledger, LedgerError, Origin};

/// Evidence below this many scored answers per (category, expert) is noise: a 95%
/// interval on 20 samples is still about ±0.2 wide.
pub const DEFAULT_MIN_SAMPLES: u64 = 20;
/// The exact frontier stays small in practice (tens to thousands of points); this bound
/// stops a pathological instance from eating memory.
pub const MAX_FRONTIER: usize = 1_000_000;
/// Float tolerance for comparing costs and qualities built from sums.
const EPS: f64 = 1e-12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// Mean cost per request in US dollars.
    Cost,
    /// Mean active parameters per request.
    Params,
}

impl Metric {
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::Cost => format!("${v:.6}"),
            Metric::Params => human_count(v),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no category has enough evidence to fit (need --min-samples {min_samples} scored answers per category and expert): {refused}")]
    NoEvidence { min_samples: u64, refused: String },
    #[error("no assignment fits the budget {budget}: the cheapest costs {cheapest}")]
    Infeasible { budget: String, cheapest: String },
    #[error("the Pareto frontier grew past {MAX_FRONTIER} points; fit fewer categories or experts")]
    TooLarge,
}

/// One expert's evidence in one category.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub expert: String,
    pub accuracy: Accuracy,
    /// The budget metric per request (dollars or active parameters).
    pub cost: f64,
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    /// Share of fitted traffic (the weights of all fitted categories sum to 1).
    pub weight: f64,
    pub candidates: Vec<Candidate>,
}

/// A category (or one of its experts) left out, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub category: String,
    pub expert: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub metric: Metric,
    pub categories: Vec<Category>,
    pub refused: Vec<Refusal>,
    /// Where the traffic weights came from, for the output's header.
    pub weights_from: &'static str,
}

/// One assignment: traffic-weighted quality and cost, and the candidate index per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub cost: f64,
    pub quality: f64,
    pub choice: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Fit {
    pub problem: Problem,
    pub budget: f64,
    /// Cheapest first; quality strictly increases along it.
    pub frontier: Vec<Point>,
    pub chosen: Point,
}

/// Reads the evidence: accuracy and cost per (category, expert) from every record with
/// feedback, traffic weights from gateway traffic (or, without any, from all records).
pub fn gather(ledger: &Ledger, since_ms: Option<u64>, metric: Metric, min_samples: u64) -> Result<Problem, FitError> {
    let pairs = ledger.report(&ReportQuery { since_ms, by: vec![GroupBy::Category, GroupBy::Expert], origin: None })?;
    let traffic =
        ledger.report(&ReportQuery { since_ms, by: vec![GroupBy::Category], origin: Some(Origin::Gateway) })?;
    let mut weights: BTreeMap<String, f64> = traffic
        .groups
        .iter()
        .filter(|g| g.key[0] != NONE_LABEL)
        .map(|g| (g.key[0].clone(), g.requests as f64))
        .collect();
    let mut weights_from = "gateway traffic";
    if weights.is_empty() {
        weights_from = "all records: no categorized gateway traffic yet";
        for g in pairs.groups.iter().filter(|g| g.key[0] != NONE_LABEL) {
            *weights.entry(g.key[0].clone()).or_default() += g.requests as f64;
        }
    }
    let mut by_cat: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let mut refused = Vec::new();
    for g in &pairs.groups {
        let (cat, expert) = (&g.key[0], &g.key[1]);
        if cat == NONE_LABEL || expert == NONE_LABEL {
            continue;
        }
        let cost = match metric {
            Metric::Cost => Some(g.cost_mean_usd),
            Metric::Params => g.active_params_mean,
        };
        let n = g.accuracy.map_or(0, |a| a.n);
        let reason = match (g.accuracy, cost) {
            (_, None) => Some("no active_params recorded".to_string()),
            (None, _) => Some("no scored answers".to_string()),
            (Some(a), _) if a.n < min_samples => Some(format!("{n} scored answers < {min_samples}")),
            _ => None,
        };
        match (reason, g.accuracy, cost) {
            (None, Some(accuracy), Some(cost)) => {
                by_cat.entry(cat.clone()).or_default().push(Candidate { expert: expert.clone(), accuracy, cost })
            }
            (reason, _, _) => refused.push(Refusal {
                category: cat.clone(),
                expert: Some(expert.clone()),
                reason: reason.unwrap_or_default(),
            }),
        }
    }
    for cat in weights.keys() {
        if !by_cat.contains_key(cat) {
            refused.push(Refusal {
                category: cat.clone(),
                expert: None,
                reason: "no expert has enough evidence".into(),
            });
        }
    }
    for cat in by_cat.keys().filter(|c| !weights.contains_key(*c)) {
        refused.push(Refusal { category: cat.clone(), expert: None, reason: "evidence but no gateway traffic".into() });
    }
    let total: f64 = by_cat.keys().filter_map(|c| weights.get(c)).sum();
    let categories = by_cat
        .into_iter()
        .filter_map(|(name, candidates)| {
            let w = weights.get(&name).copied()?;
            Some(Category { name, weight: w / total, candidates })
        })
        .collect::<Vec<_>>();
    if categories.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|r| {
                format!(
                    "{}{} ({})",
                    r.category,
                    r.expert.as_ref().map(|e| format!("/{e}")).unwrap_or_default(),
                    r.reason
                )
            })
            .collect();
        return Err(FitError::NoEvidence { min_samples, refused: list.join(", ") });
    }
    Ok(Problem { metric, categories, refused, weights_from })
}

/// The exact quality/cost Pareto frontier over whole assignments, cheapest first.
pub fn frontier(categories: &[Category]) -> Result<Vec<Point>, FitError> {
    let mut points = vec![Point { cost: 0.0, quality: 0.0, choice: Vec::new() }];
    for cat in categories {
        let mut next = Vec::with_capacity(points.len() * cat.candidates.len());
        for p in &points {
            for (j, c) in cat.candidates.iter().enumerate() {
                let mut choice = p.choice.clone();
                choice.push(j);
                next.push(Point {
                    cost: p.cost + cat.weight * c.cost,
                    quality: p.quality + cat.weight * c.accuracy.mean,
                    choice,
                });
            }
        }
        // Cheapest first, and among equal costs the best first; then keep a point only if
        // it beats everything cheaper.
        next.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(b.quality.total_cmp(&a.quality)));
        let mut best = f64::NEG_INFINITY;
        next.retain(|p| {
            let keep = p.quality > best + EPS;
            if keep {
                best = p.quality;
            }
            keep
        });
        if next.len() > MAX_FRONTIER {
            return Err(FitError::TooLarge);
        }
        points = next;
    }
    Ok(points)
}

/// The best assignment whose mean cost is within `budget`.
pub fn solve(problem: Problem, budget: f64) -> Result<Fit, FitError> {
    let frontier = frontier(&problem.categories)?;
    let chosen = frontier.iter().rev().find(|p| p.cost <= budget * (1.0 + EPS) + EPS).cloned().ok_or_else(|| {
        FitError::Infeasible {
            budget: problem.metric.format(budget),
            cheapest: frontier.first().map_or_else(|| "?".into(), |p| problem.metric.format(p.cost)),
        }
    })?;
    Ok(Fit { problem, budget, frontier, chosen })
}

/// The frontier as a table, the chosen point marked. Long frontiers are thinned to
/// `max_rows` evenly spaced points (the chosen one always shows).
pub fn render_frontier(fit: &Fit, max_rows: usize) -> String {
    let m = fit.problem.metric;
    let n = fit.frontier.len();
    let step = n.div_ceil(max_rows.max(1)).max(1);
    let mut out = format!("Pareto frontier ({n} points; quality = traffic-weighted accuracy):\n");
    let _ = writeln!(out, "  {:>14}  {:>8}  assignment", "mean cost", "quality");
    for (i, p) in fit.frontier.iter().enumerate() {
        let is_chosen = *p == fit.chosen;
        if !(is_chosen || i % step == 0 || i + 1 == n) {
            continue;
        }
        let assignment: Vec<String> = fit
            .problem
            .categories
            .iter()
            .zip(&p.choice)
            .map(|(c, &j)| format!("{}={}", c.name, c.candidates[j].expert))
            .collect();
        let _ = writeln!(
            out,
            "{} {:>14}  {:>8.4}  {}",
            if is_chosen { "*" } else { " " },
            m.format(p.cost),
            p.quality,
            assignment.join(" ")
        );
    }
    out
}

/// The policy file for a fit. Kept in one function so the format can follow the config as
/// it evolves; the current shape is a virtual model with a per-category expert table.
pub fn policy_toml(model_name: &str, router: &str, fit: &Fit, source: &str) -> String {
    let p = &fit.problem;
    let m = p.metric;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::new();
    let _ = writeln!(out, "# Written by `triage policy fit` from {source}.");
    let _ = writeln!(
        out,
        "# Budget: mean {} per request <= {}; chosen point: quality {:.4} at {}.",
        if m == Metric::Cost { "cost" } else { "active parameters" },
        m.format(fit.budget),
        fit.chosen.quality,
        m.format(fit.chosen.cost)
    );
    let _ = writeln!(out, "# Quality is accuracy weighted by each category's share of traffic ({}).", p.weights_from);
    let _ = writeln!(out, "# Each category lists its chosen expert first; the rest, best accuracy first, are");
    let _ = writeln!(out, "# fallbacks tried only when it fails. Categories not listed use the catch-all \"*\".");
    let _ = writeln!(out, "# It names experts defined elsewhere: load it beside them, e.g.");
    let _ = writeln!(out, "#   triage serve --config policies/default.toml --config <this file>");
    for r in p.refused.iter().filter(|r| r.expert.is_none()) {
        let _ =
            writeln!(out, "# Not fitted: category {:?}: {}; it uses the model's expert list.", r.category, r.reason);
    }
    // The model-level list: chosen experts, the ones serving the most traffic first.
    let mut served: BTreeMap<&str, f64> = BTreeMap::new();
    for (c, &j) in p.categories.iter().zip(&fit.chosen.choice) {
        *served.entry(c.candidates[j].expert.as_str()).or_default() += c.weight;
    }
    let mut experts: Vec<(&str, f64)> = served.into_iter().collect();
    experts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let list: Vec<String> = experts.iter().map(|(e, _)| q(e)).collect();
    let fallback = list.first().cloned().unwrap_or_else(|| q(""));
    let _ = writeln!(
        out,
        "\n[[models]]\nname = {}\nrouter = {}\n# Uncertain requests go to the expert serving the most traffic.\nfallback = {}\nexperts = [{}]\n\n[models.categories]\n\"*\" = [{}]",
        q(model_name),
        q(router),
        fallback,
        list.join(", "),
        list.join(", ")
    );
    for (c, &j) in p.categories.iter().zip(&fit.chosen.choice) {
        let chosen = &c.candidates[j];
        let mut rest: Vec<&Candidate> =
            c.candidates.iter().enumerate().filter(|(i, _)| *i != j).map(|(_, c)| c).collect();
        rest.sort_by(|a, b| b.accuracy.mean.total_cmp(&a.accuracy.mean));
        let names: Vec<String> = std::iter::once(chosen).chain(rest).map(|c| q(&c.expert)).collect();
        let a = chosen.accuracy;
        let _ = writeln!(
            out,
            "# {:.1}% of traffic; {}: accuracy {:.2} (n={}, 95% CI {:.2}-{:.2}), {} per request",
            c.weight * 100.0,
            chosen.expert,
            a.mean,
            a.n,
            a.ci_low,
            a.ci_high,
            m.format(chosen.cost)
        );
        let key = if c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
            c.name.clone()
        } else {
            q(&c.name)
        };
        let _ = writeln!(out, "{key} = [{}]", names.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn acc(mean: f64) -> Accuracy {
        Accuracy { mean, n: 100, ci_low: 0.0, ci_high: 1.0 }
    }

    fn random_problem(rng: &mut rand::rngs::StdRng) -> Vec<Category> {
        let n_cat = rng.random_range(1..=5);
        let raw: Vec<f64> = (0..n_cat).map(|_| rng.random_range(0.05..1.0)).collect();
        let total: f64 = raw.iter().sum();
        raw.iter()
            .enumerate()
            .map(|(i, w)| Category {
                name: format!("c{i}"),
                weight: w / total,
                candidates: (0..rng.random_range(1..=4))
                    .map(|e| Candidate {
                        expert: format!("e{e}"),
                        accuracy: acc(rng.random_range(0.0..1.0)),
                        // Few distinct costs, so ties and dominated options occur.
                        cost: f64::from(rng.random_range(0..6u8)) * 0.001,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every assignment, by enumeration.
    fn brute_force(cats: &[Category], budget: f64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut idx = vec![0usize; cats.len()];
        loop {
            let cost: f64 = cats.iter().zip(&idx).map(|(c, &j)| c.weight * c.candidates[j].cost).sum();
            let q: f64 = cats.iter().zip(&idx).map(|(c, &j)| c.weight * c.candidates[j].accuracy.mean).sum();
            if cost <= budget + 1e-12 && best.is_none_or(|b| q > b) {
                best = Some(q);
            }
            let mut k = 0;
            loop {
                if k == cats.len() {
                    return best;
                }
                idx[k] += 1;
                if idx[k] < cats[k].candidates.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    fn problem(categories: Vec<Category>) -> Problem {
        Problem { metric: Metric::Cost, categories, refused: Vec::new(), weights_from: "test" }
    }

    #[test]
    fn fit_matches_brute_force_on_random_instances() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0072_194e);
        for case in 0..500 {
            let cats = random_problem(&mut rng);
            let budget = rng.random_range(0.0..0.006);
            let expected = brute_force(&cats, budget);
            match solve(problem(cats.clone()), budget) {
                Ok(fit) => {
                    let exp = expected.unwrap_or_else(|| panic!("case {case}: solver found a point, brute force none"));
                    assert!(
                        (fit.chosen.quality - exp).abs() < 1e-9,
                        "case {case}: {} vs {exp}: {cats:?}",
                        fit.chosen.quality
                    );
                    assert!(fit.chosen.cost <= budget + 1e-9, "case {case}: over budget");
                    // The reported point is what its choices add up to.
                    let q: f64 = cats
                        .iter()
                        .zip(&fit.chosen.choice)
                        .map(|(c, &j)| c.weight * c.candidates[j].accuracy.mean)
                        .sum();
                    assert!((q - fit.chosen.quality).abs() < 1e-9);
                    for w in fit.frontier.windows(2) {
                        assert!(w[0].cost <= w[1].cost && w[0].quality < w[1].quality, "frontier not monotone");
                    }
                }
                Err(FitError::Infeasible { .. }) => assert!(expected.is_none(), "case {case}: solver said infeasible"),
                Err(e) => panic!("case {case}: {e}"),
            }
        }
    }

    #[test]
    fn policy_file_parses_and_lists_the_chosen_expert_first() {
        let cats = vec![
            Category {
                name: "math".into(),
                weight: 0.25,
                candidates: vec![
                    Candidate { expert: "small".into(), accuracy: acc(0.4), cost: 0.0 },
                    Candidate { expert: "big".into(), accuracy: acc(0.9), cost: 0.004 },
                ],
            },
            Category {
                name: "chit chat".into(),
                weight: 0.75,
                candidates: vec![
                    Candidate { expert: "small".into(), accuracy: acc(0.8), cost: 0.0 },
                    Candidate { expert: "big".into(), accuracy: acc(0.85), cost: 0.004 },
                ],
            },
        ];
        // Budget 0.001 buys "big" for math (0.25 * 0.004) but not for chat.
        let fit = solve(problem(cats), 0.001).unwrap();
        let text = policy_toml("triage-fit", "default", &fit, "test");
        let v: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let m = &v["models"][0];
        assert_eq!(m["name"].as_str(), Some("triage-fit"));
        assert_eq!(m["categories"]["math"][0].as_str(), Some("big"), "{text}");
        assert_eq!(m["categories"]["chit chat"][0].as_str(), Some("small"), "{text}");
        assert_eq!(m["experts"][0].as_str(), Some("small"), "most traffic first: {text}");
        assert!(render_frontier(&fit, 10).contains("* "));
    }

    #[test]
    fn infeasible_budget_says_what_the_cheapest_costs() {
        let cats = vec![Category {
            name: "x".into(),
            weight: 1.0,
            candidates: vec![Candidate { expert: "e".into(), accuracy: acc(0.5), cost: 0.002 }],
        }];
        let err = solve(problem(cats), 0.001).unwrap_err().to_string();
        assert!(err.contains("$0.002000"), "{err}");
    }
}

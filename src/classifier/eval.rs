//! Metrics for `triage router eval` and the training report.

use std::fmt::Write as _;

use super::argmax;

/// Confidence bins for the expected calibration error (the usual choice in the
/// calibration literature, e.g. Guo et al. 2017 use 15; 10 keeps bins populated on a
/// few hundred examples).
pub const ECE_BINS: usize = 10;

/// Per-class precision/recall/F1.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Evaluation of predictions against gold labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Expected calibration error of the top-label confidence.
    pub ece: f64,
    pub labels: Vec<String>,
}

/// Computes metrics from gold label indices and predicted probability rows.
pub fn compute(labels: &[String], gold: &[usize], probs: &[Vec<f32>]) -> Metrics {
    let c = labels.len();
    let mut confusion = vec![vec![0usize; c]; c];
    let mut bins = vec![(0usize, 0f64, 0f64); ECE_BINS]; // (count, sum conf, sum correct)
    let mut correct = 0usize;
    for (&g, p) in gold.iter().zip(probs) {
        let pred = argmax(p);
        if g < c && pred < c {
            confusion[g][pred] += 1;
        }
        let conf = f64::from(p.get(pred).copied().unwrap_or(0.0));
        let hit = f64::from(u8::from(pred == g));
        correct += usize::from(pred == g);
        let b = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += hit;
    }
    let n = gold.len().min(probs.len());
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let per_class: Vec<ClassMetrics> = (0..c)
        .map(|k| {
            let tp = confusion[k][k] as f64;
            let predicted: usize = confusion.iter().map(|row| row[k]).sum();
            let support: usize = confusion[k].iter().sum();
            let precision = ratio(tp, predicted as f64);
            let recall = ratio(tp, support as f64);
            let f1 = ratio(2.0 * precision * recall, precision + recall);
            ClassMetrics { label: labels[k].clone(), precision, recall, f1, support }
        })
        .collect();
    let ece = bins.iter().map(|&(cnt, conf, hit)| if cnt > 0 { (conf - hit).abs() / n as f64 } else { 0.0 }).sum();
    Metrics {
        n,
        accuracy: ratio(correct as f64, n as f64),
        macro_f1: ratio(per_class.iter().map(|m| m.f1).sum(), c as f64),
        per_class,
        confusion,
        ece,
        labels: labels.to_vec(),
    }
}

impl Metrics {
    /// Human-readable report: summary, per-class table, confusion matrix.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "examples {}  accuracy {:.4}  macro-F1 {:.4}  ECE {:.4}",
            self.n, self.accuracy, self.macro_f1, self.ece
        );
        let _ = writeln!(s, "\n| class | precision | recall | F1 | support |\n|---|---|---|---|---|");
        for m in &self.per_class {
            let _ = writeln!(s, "| {} | {:.3} | {:.3} | {:.3} | {} |", m.label, m.precision, m.recall, m.f1, m.support);
        }
        let short: Vec<String> = self.labels.iter().map(|l| l.chars().take(5).collect()).collect();
        let _ = writeln!(s, "\nconfusion (rows = gold, columns = predicted)\n");
        let _ = writeln!(s, "| gold \\ pred | {} |", short.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(short.len()));
        for (label, row) in self.labels.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
        }
        s
    }
}

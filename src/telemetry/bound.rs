//! The per-request instruments, with each attribute set resolved once.
//!
//! The SDK finds a measurement's series by hashing its attributes with SipHash on every
//! call (`ValueMap::measure`). A request records six or seven measurements whose attribute
//! sets repeat from one request to the next (operation, model, expert, outcome), and that
//! lookup was the largest part of its telemetry cost: about 15k instructions a request of
//! the proxy path's 140k (callgrind, bench/README.md "Ninth session").
//!
//! [`Bound`] keeps the SDK's bound handle for every attribute set it has seen, in a map
//! hashed with foldhash, so a repeated set costs one cheap lookup and a direct update of
//! its aggregator. What is exported does not change: a bound handle writes to the same
//! series the unbound call would, and the SDK's cardinality limit still applies (past it,
//! `bind` returns the overflow series). The map itself stops growing at [`MAX_SETS`]; sets
//! past that (a backend answering with ever-new model names) are measured unbound.

use std::collections::HashMap;
use std::sync::RwLock;

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram};
use opentelemetry::{KeyValue, Value};

/// Attribute sets kept bound per instrument. Each costs its keys and values plus a handle;
/// the SDK's own default cardinality limit is 2000.
pub(crate) const MAX_SETS: usize = 1024;

/// An instrument the SDK can bind to an attribute set.
pub(crate) trait Bindable<T> {
    type Handle;
    fn bind(&self, attrs: &[KeyValue]) -> Self::Handle;
    fn unbound(&self, value: T, attrs: &[KeyValue]);
    fn bound(handle: &Self::Handle, value: T);
}

impl<T> Bindable<T> for Histogram<T> {
    type Handle = BoundHistogram<T>;
    fn bind(&self, attrs: &[KeyValue]) -> Self::Handle {
        Histogram::bind(self, attrs)
    }
    fn unbound(&self, value: T, attrs: &[KeyValue]) {
        self.record(value, attrs);
    }
    fn bound(handle: &Self::Handle, value: T) {
        handle.record(value);
    }
}

impl<T> Bindable<T> for Counter<T> {
    type Handle = BoundCounter<T>;
    fn bind(&self, attrs: &[KeyValue]) -> Self::Handle {
        Counter::bind(self, attrs)
    }
    fn unbound(&self, value: T, attrs: &[KeyValue]) {
        self.add(value, attrs);
    }
    fn bound(handle: &Self::Handle, value: T) {
        handle.add(value);
    }
}

/// An instrument and the handles of the attribute sets it has measured, found by
/// [`fingerprint`] and confirmed by [`same`].
pub(crate) struct Bound<I: Bindable<T>, T> {
    inner: I,
    sets: RwLock<Sets<I::Handle>>,
}

/// The attribute sets that share a fingerprint (almost always one), with their handles.
type Bucket<H> = Vec<(Box<[KeyValue]>, H)>;

struct Sets<H> {
    by_print: HashMap<u64, Bucket<H>, foldhash::fast::FixedState>,
}

impl<H> Sets<H> {
    fn find(&self, print: u64, attrs: &[KeyValue]) -> Option<&H> {
        self.by_print.get(&print)?.iter().find(|(a, _)| same(a, attrs)).map(|(_, h)| h)
    }
}

impl<I: Bindable<T>, T> Bound<I, T> {
    pub(crate) fn new(inner: I) -> Self {
        Self { inner, sets: RwLock::new(Sets { by_print: HashMap::default() }) }
    }

    /// Records `value` under `attrs`. Attribute order is part of the key, as it is in the
    /// SDK's first lookup: callers build a given set in one order.
    pub(crate) fn measure(&self, value: T, attrs: &[KeyValue]) {
        let print = fingerprint(attrs);
        if let Ok(sets) = self.sets.read() {
            if let Some(h) = sets.find(print, attrs) {
                return I::bound(h, value);
            }
        }
        let Ok(mut sets) = self.sets.write() else { return self.inner.unbound(value, attrs) };
        if let Some(h) = sets.find(print, attrs) {
            return I::bound(h, value);
        }
        // Counted in fingerprints: two sets sharing one are too rare to matter to a cap.
        if sets.by_print.len() >= MAX_SETS {
            drop(sets);
            return self.inner.unbound(value, attrs);
        }
        let h = self.inner.bind(attrs);
        I::bound(&h, value);
        sets.by_print.entry(print).or_default().push((attrs.into(), h));
    }

    #[cfg(test)]
    fn sets(&self) -> usize {
        self.sets.read().map(|s| s.by_print.values().map(Vec::len).sum()).unwrap_or(0)
    }
}

/// A hash of an attribute set's keys and values. `KeyValue`'s own `Hash` goes through
/// several `write`s per attribute and cost more than the SDK lookup it replaces.
fn fingerprint(attrs: &[KeyValue]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x7472_6961_6765).build_hasher();
    for kv in attrs {
        h.write(kv.key.as_str().as_bytes());
        match &kv.value {
            Value::String(s) => h.write(s.as_str().as_bytes()),
            Value::I64(i) => h.write_i64(*i),
            Value::F64(f) => h.write_u64(f.to_bits()),
            Value::Bool(b) => h.write_u8(u8::from(*b)),
            // Arrays are never measured here; `same` still tells them apart.
            _ => h.write_u8(0xff),
        }
    }
    h.finish()
}

/// Equal attribute sets, in order. Most keys and many values are the same `&'static str`
/// or `Arc<str>` on both sides, so a pointer comparison settles them without a `memcmp`.
fn same(a: &[KeyValue], b: &[KeyValue]) -> bool {
    fn eq(x: &str, y: &str) -> bool {
        std::ptr::eq(x, y) || x == y
    }
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            eq(x.key.as_str(), y.key.as_str())
                && match (&x.value, &y.value) {
                    (Value::String(s), Value::String(t)) => eq(s.as_str(), t.as_str()),
                    (v, w) => v == w,
                }
        })
}

impl<T> Bound<Histogram<T>, T> {
    pub(crate) fn record(&self, value: T, attrs: &[KeyValue]) {
        self.measure(value, attrs);
    }
}

impl<T> Bound<Counter<T>, T> {
    pub(crate) fn add(&self, value: T, attrs: &[KeyValue]) {
        self.measure(value, attrs);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::reader::MetricReader as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};

    use super::*;
    use crate::telemetry::SharedReader;

    fn sums(rm: &ResourceMetrics, name: &str) -> Vec<(Vec<KeyValue>, u64)> {
        let mut out = Vec::new();
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                    for p in s.data_points() {
                        out.push((p.attributes().cloned().collect(), p.value()));
                    }
                }
            }
        }
        out.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        out
    }

    fn histogram_counts(rm: &ResourceMetrics, name: &str) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == name) {
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                    for p in h.data_points() {
                        out.push((p.count(), p.sum()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn bound_and_unbound_measurements_land_in_the_same_series() {
        let reader = SharedReader(std::sync::Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let meter = provider.meter("test");
        let plain = meter.u64_counter("c").build();
        let bound = Bound::new(meter.u64_counter("c").build());
        let h = Bound::new(meter.f64_histogram("h").build());
        let a = [KeyValue::new("expert", "x"), KeyValue::new("outcome", "ok")];
        let b = [KeyValue::new("expert", "y"), KeyValue::new("outcome", "ok")];
        for _ in 0..3 {
            bound.add(1, &a);
            h.record(0.5, &a);
        }
        bound.add(2, &b);
        plain.add(10, &a);
        // The same set built from owned strings (a model name read from a reply) finds
        // the handle bound from static ones; a number is not its string.
        let owned = [KeyValue::new("expert", String::from("x")), KeyValue::new("outcome", "ok".to_string())];
        bound.add(0, &owned);
        assert_eq!(bound.sets(), 2, "one handle per attribute set, not per call");
        bound.add(1, &[KeyValue::new("n", 5)]);
        bound.add(1, &[KeyValue::new("n", "5")]);
        assert_eq!(bound.sets(), 4);

        let mut rm = ResourceMetrics::default();
        reader.collect(&mut rm).unwrap();
        let got = sums(&rm, "c");
        assert!(got.contains(&(a.to_vec(), 13)) && got.contains(&(b.to_vec(), 2)), "{got:?}");
        assert_eq!(got.len(), 4);
        assert_eq!(histogram_counts(&rm, "h"), vec![(3, 1.5)]);
    }

    #[test]
    fn sets_past_the_cap_are_still_counted() {
        let reader = SharedReader(std::sync::Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
        let c = Bound::new(provider.meter("test").u64_counter("c").build());
        for i in 0..MAX_SETS + 10 {
            c.add(1, &[KeyValue::new("model", format!("m{i}"))]);
        }
        c.add(1, &[KeyValue::new("model", format!("m{}", MAX_SETS + 5))]);
        assert_eq!(c.sets(), MAX_SETS);
        let mut rm = ResourceMetrics::default();
        reader.collect(&mut rm).unwrap();
        let got = sums(&rm, "c");
        assert_eq!(got.iter().map(|(_, v)| v).sum::<u64>(), MAX_SETS as u64 + 11);
        let late = [KeyValue::new("model", format!("m{}", MAX_SETS + 5))];
        assert!(got.contains(&(late.to_vec(), 2)), "an unbound set keeps its own series");
    }
}

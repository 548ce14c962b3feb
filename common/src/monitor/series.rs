//! One metric's readings over time: interpolation, trapezoid integrals, peaks and means over a
//! window, and folding a long window's beginning into a few sums.

/// Readings of one metric on one (source, device), time-ordered.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// (agent monotonic ns, value)
    pub points: Vec<(u64, f64)>,
    /// The folded beginning of a running window (see [`Series::fold`]).
    prefix: Option<Prefix>,
}

/// What [`Series::fold`] summed up of a window that begins at `anchor_ns`, before `points[0]`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Prefix {
    anchor_ns: u64,
    /// Where the integral begins: the anchor, or the first point when the series began later.
    start_ns: u64,
    /// The value at the anchor, when the series reached back to it.
    at_anchor: Option<f64>,
    /// Trapezoid integral over `[start_ns, points[0].t]`, value·seconds.
    integral: f64,
    /// Folded points inside the window (t >= anchor): count, sum and largest value.
    n: usize,
    sum: f64,
    peak: Option<f64>,
}

/// A series is folded only when it holds more points than this.
pub const FOLD_POINTS: usize = 1024;

impl Series {
    /// Adds a point; out-of-order points are inserted in place.
    pub fn push(&mut self, t_ns: u64, value: f64) {
        if !value.is_finite() {
            return;
        }
        match self.points.last() {
            Some(&(last, _)) if t_ns < last => {
                let at = self.points.partition_point(|&(t, _)| t <= t_ns);
                self.points.insert(at, (t_ns, value));
            }
            _ => self.points.push((t_ns, value)),
        }
    }

    /// Sums up the points of the window that began at `anchor_ns` that lie before `before_ns`
    /// (keeping the last of them, for interpolation), so a long window holds few points. Window
    /// queries starting exactly at the anchor ([`Series::integrate`], [`Series::peak`],
    /// [`Series::mean`], [`Series::covers`], [`Series::at`]) answer as if nothing was folded, as
    /// long as they end at or after the kept point; other queries see only the kept points.
    /// [`PowerSeries::forget_before`](super::PowerSeries::forget_before) ends the window. Does nothing with at most [`FOLD_POINTS`]
    /// points, or for a different anchor than the one already folded.
    pub fn fold(&mut self, anchor_ns: u64, before_ns: u64) {
        if self.points.len() <= FOLD_POINTS || self.prefix.is_some_and(|p| p.anchor_ns != anchor_ns)
        {
            return;
        }
        // Keep points[k..]: k is the last point before `before_ns`, after the anchor.
        let Some(k) = self
            .points
            .partition_point(|&(t, _)| t < before_ns)
            .checked_sub(1)
        else {
            return;
        };
        let (keep_t, _) = self.points[k];
        let Some(&(first_t, _)) = self.points.first() else {
            return;
        };
        if k == 0 || keep_t <= anchor_ns {
            return;
        }
        let mut p = self.prefix.unwrap_or(Prefix {
            anchor_ns,
            start_ns: anchor_ns.max(first_t),
            at_anchor: self.at(anchor_ns),
            integral: 0.0,
            n: 0,
            sum: 0.0,
            peak: None,
        });
        let from = self.points[0].0.max(p.start_ns);
        p.integral += self.integrate_points(from, keep_t);
        for &(t, v) in &self.points[..k] {
            if t >= anchor_ns {
                p.n += 1;
                p.sum += v;
                p.peak = Some(p.peak.map_or(v, |m: f64| m.max(v)));
            }
        }
        self.points.drain(..k);
        self.prefix = Some(p);
    }

    /// Forgets points older than `t_ns`, keeping the last one before it (for interpolation), and
    /// ends any folded window.
    pub(super) fn forget_before(&mut self, t_ns: u64) {
        self.prefix = None;
        let keep_from = self
            .points
            .partition_point(|&(t, _)| t < t_ns)
            .saturating_sub(1);
        self.points.drain(..keep_from);
    }

    /// Whether a window's beginning is folded.
    #[cfg(test)]
    pub(super) fn is_folded(&self) -> bool {
        self.prefix.is_some()
    }

    /// The folded prefix that a query from `from_ns` can build on.
    fn prefix_for(&self, from_ns: u64) -> Option<Prefix> {
        self.prefix.filter(|p| p.anchor_ns == from_ns)
    }

    /// The value at `t_ns`, linear between neighbours; None outside the series' span.
    pub fn at(&self, t_ns: u64) -> Option<f64> {
        match self.prefix_for(t_ns) {
            Some(p) => p.at_anchor,
            None => self.at_points(t_ns),
        }
    }

    /// The value at `t_ns` from the kept points alone, linear between neighbours.
    fn at_points(&self, t_ns: u64) -> Option<f64> {
        let i = self.points.partition_point(|&(t, _)| t < t_ns);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (_, Some(&(t1, v1))) if t1 == t_ns => Some(v1),
            (Some((t0, v0)), Some(&(t1, v1))) => {
                let f = (t_ns - t0) as f64 / (t1 - t0) as f64;
                Some(v0 + f * (v1 - v0))
            }
            _ => None,
        }
    }

    /// Whether points exist at or before `from_ns` and at or after `to_ns`.
    pub fn covers(&self, from_ns: u64, to_ns: u64) -> bool {
        if let Some(p) = self.prefix_for(from_ns) {
            return p.at_anchor.is_some() && self.points.last().is_some_and(|&(b, _)| b >= to_ns);
        }
        matches!((self.points.first(), self.points.last()),
            (Some(&(a, _)), Some(&(b, _))) if a <= from_ns && b >= to_ns)
    }

    /// Trapezoid integral over `[from_ns, to_ns]` in value·seconds, with the edges interpolated;
    /// only the part the series covers counts. Returns (integral, covered seconds).
    pub fn integrate(&self, from_ns: u64, to_ns: u64) -> (f64, f64) {
        if let Some(p) = self.prefix_for(from_ns) {
            let Some((&(kept, _), &(last, _))) = self.points.first().zip(self.points.last()) else {
                return (0.0, 0.0);
            };
            if to_ns >= kept {
                let b = to_ns.min(last);
                return (
                    p.integral + self.integrate_points(kept, b),
                    b.saturating_sub(p.start_ns) as f64 / 1e9,
                );
            }
        }
        let (Some(&(first, _)), Some(&(last, _))) = (self.points.first(), self.points.last())
        else {
            return (0.0, 0.0);
        };
        let a = from_ns.max(first);
        let b = to_ns.min(last);
        if b <= a {
            return (0.0, 0.0);
        }
        (self.integrate_points(a, b), (b - a) as f64 / 1e9)
    }

    /// Trapezoid integral over `[a, b]` of the kept points, edges interpolated (a < b, both
    /// inside their span).
    fn integrate_points(&self, a: u64, b: u64) -> f64 {
        if b <= a {
            return 0.0;
        }
        let mut knots: Vec<(u64, f64)> = Vec::new();
        if let Some(v) = self.at_points(a) {
            knots.push((a, v));
        }
        knots.extend(self.points.iter().copied().filter(|&(t, _)| t > a && t < b));
        if let Some(v) = self.at_points(b) {
            knots.push((b, v));
        }
        knots
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) as f64 / 1e9 * (w[0].1 + w[1].1) / 2.0)
            .sum()
    }

    /// The largest value inside `[from_ns, to_ns]`.
    pub fn peak(&self, from_ns: u64, to_ns: u64) -> Option<f64> {
        let kept = self
            .points
            .iter()
            .filter(|&&(t, _)| t >= from_ns && t <= to_ns)
            .map(|&(_, v)| v)
            .reduce(f64::max);
        match self.prefix_for(from_ns).and_then(|p| p.peak) {
            Some(folded) => Some(kept.map_or(folded, |k| k.max(folded))),
            None => kept,
        }
    }

    /// Mean of the values inside `[from_ns, to_ns]` (unweighted).
    pub fn mean(&self, from_ns: u64, to_ns: u64) -> Option<f64> {
        let (mut n, mut sum) = self.prefix_for(from_ns).map_or((0, 0.0), |p| (p.n, p.sum));
        for &(_, v) in self
            .points
            .iter()
            .filter(|&&(t, _)| t >= from_ns && t <= to_ns)
        {
            n += 1;
            sum += v;
        }
        (n > 0).then(|| sum / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::test_util::{S, close};

    #[test]
    fn a_series_that_began_after_the_anchor_folds_from_its_first_point() {
        let mut f = Series::default();
        for i in 0..3_000u64 {
            f.push(100 * S + i * S, (i % 17) as f64);
        }
        let w = f.clone();
        f.fold(50 * S, 2_000 * S);
        assert!(f.points.len() < 1_200);
        assert_eq!(f.covers(50 * S, 3_000 * S), w.covers(50 * S, 3_000 * S));
        assert!(!f.covers(50 * S, 3_000 * S));
        let (a, b) = (
            f.integrate(50 * S, 3_000 * S),
            w.integrate(50 * S, 3_000 * S),
        );
        assert!(close(a.0, b.0) && close(a.1, b.1), "{a:?} vs {b:?}");
        assert_eq!(f.mean(50 * S, 2_900 * S), w.mean(50 * S, 2_900 * S));
        // Another anchor is not folded over.
        f.fold(60 * S, 2_500 * S);
        assert!(f.points.len() > 900);
    }

    #[test]
    fn series_inserts_out_of_order_points() {
        let mut s = Series::default();
        s.push(2, 2.0);
        s.push(1, 1.0);
        s.push(3, f64::NAN);
        assert_eq!(s.points, vec![(1, 1.0), (2, 2.0)]);
        assert_eq!(s.at(0), None);
        assert_eq!(s.at(3), None);
    }
}

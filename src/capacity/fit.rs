//! The maths of a forecast, free of I/O: a least-squares line over a
//! series, the jumps that make a line wrong, and the projection to the
//! capacity with its band.

use chrono::{DateTime, Utc};

use super::{Confidence, Forecast, Projection, Verdict};

/// A fitted line `v(t) = start + slope × (t - from)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// Unix seconds of the first point fitted.
    pub from: f64,
    /// The line's value at `from`.
    pub start: f64,
    /// Per second.
    pub slope: f64,
    /// 1 − SSres/SStot (1 for a series the line meets exactly).
    pub r2: f64,
    /// The residuals' standard deviation.
    pub sigma: f64,
    pub n: usize,
    /// The fitted times' mean (seconds after `from`) and their sum of
    /// squared deviations: how far from its data the line is read.
    pub mean_t: f64,
    pub stt: f64,
}

impl Line {
    #[must_use]
    pub fn at(&self, t: f64) -> f64 {
        self.start + self.slope * (t - self.from)
    }

    /// Twice the prediction error of a new point at `t`: the line's own
    /// uncertainty (its slope and level from `n` points) with the scatter
    /// around it. Residuals that follow each other (a daily cycle) make the
    /// truth wider still.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn band(&self, t: f64) -> f64 {
        let d = t - self.from - self.mean_t;
        2.0 * self.sigma * (1.0 + 1.0 / self.n as f64 + d * d / self.stt).sqrt()
    }

    /// When the line shifted by `offset` reaches `level` (`None`: never,
    /// it does not grow).
    #[must_use]
    pub fn reaches(&self, level: f64, offset: f64) -> Option<f64> {
        (self.slope > 0.0).then(|| self.from + (level - self.start - offset) / self.slope)
    }
}

/// Least squares over `points` (`None` under 3 points or a single instant).
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn least_squares(points: &[(f64, f64)]) -> Option<Line> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let from = points[0].0;
    let nf = n as f64;
    let mt = points.iter().map(|p| p.0 - from).sum::<f64>() / nf;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut stt, mut stv, mut svv) = (0.0, 0.0, 0.0);
    for (t, v) in points {
        let (dt, dv) = (t - from - mt, v - mv);
        stt += dt * dt;
        stv += dt * dv;
        svv += dv * dv;
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = stv / stt;
    let start = mv - slope * mt;
    let ss_res: f64 = points
        .iter()
        .map(|(t, v)| {
            let r = v - (start + slope * (t - from));
            r * r
        })
        .sum();
    let r2 = if svv > 0.0 {
        (1.0 - ss_res / svv).max(0.0)
    } else {
        1.0
    };
    Some(Line {
        from,
        start,
        slope,
        r2,
        sigma: (ss_res / (nf - 2.0)).sqrt(),
        n,
        mean_t: mt,
        stt,
    })
}

/// A jump: the series moved far beyond its usual step, from `points[from]`
/// to `points[to]` (one move, or several in a row the same way: a clean-up
/// or a restore that takes a few samples is one jump).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jump {
    pub from: usize,
    pub to: usize,
    /// `points[to] - points[from]`.
    pub size: f64,
}

impl Jump {
    #[must_use]
    pub fn rise(&self) -> bool {
        self.size > 0.0
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Moves flagged as jumps: more than 8 robust standard deviations of the
/// usual move (1.4826 × the median absolute deviation of the differences)
/// and more than a fifth of the series' range — noise and steady growth
/// never make one, a clean-up or a restore does. Flagged moves the same
/// way with at most one ordinary move between them are one jump.
#[must_use]
pub fn jumps(points: &[(f64, f64)]) -> Vec<Jump> {
    let d: Vec<f64> = points.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let range = hi - lo;
    if d.len() < 3 || range <= 0.0 {
        return Vec::new();
    }
    let m = median(&mut d.clone());
    let mad = median(&mut d.iter().map(|x| (x - m).abs()).collect::<Vec<_>>());
    let limit = (8.0 * 1.4826 * mad).max(0.2 * range);
    let mut out: Vec<Jump> = Vec::new();
    for (i, x) in d.iter().enumerate() {
        if (x - m).abs() <= limit {
            continue;
        }
        let up = *x > m;
        match out.last_mut() {
            Some(j) if j.rise() == up && i <= j.to + 1 => {
                j.to = i + 1;
                j.size += x;
            }
            _ => out.push(Jump {
                from: i,
                to: i + 1,
                size: *x,
            }),
        }
    }
    for j in &mut out {
        j.size = points[j.to].1 - points[j.from].1;
    }
    out
}

/// The points a glitch displaced: a jump undone within three samples by
/// one the other way (a scrape that read 0, a spike) is not the series'
/// shape. Returns the indexes to leave out.
#[must_use]
pub fn glitches(jumps: &[Jump]) -> Vec<usize> {
    let mut out = Vec::new();
    for w in jumps.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.rise() != b.rise()
            && b.from <= a.to + 3
            && (a.size + b.size).abs() < 0.5 * a.size.abs()
        {
            out.extend(a.to..=b.from);
        }
    }
    out
}

/// At least this many points, over at least a tenth of the lookback, are
/// fitted; fewer give no date.
pub const MIN_POINTS: usize = 10;

fn date(t: f64) -> Option<DateTime<Utc>> {
    if !t.is_finite() || t.abs() > 1e11 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    DateTime::from_timestamp(t as i64, 0)
}

fn day(t: f64) -> String {
    date(t).map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// Thins `points` to at most `max` for drawing (every k-th, and the last).
#[must_use]
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let k = points.len().div_ceil(max - 1);
    let mut out: Vec<(f64, f64)> = points.iter().step_by(k).copied().collect();
    if out.last() != points.last() {
        out.extend(points.last());
    }
    out
}

/// One series' forecast: `points` over the lookback (oldest first),
/// `capacity` now, at `now`.
#[must_use]
#[allow(clippy::cast_precision_loss, clippy::too_many_lines)]
pub fn project(
    f: &Forecast,
    labels: std::collections::BTreeMap<String, String>,
    points: &[(f64, f64)],
    capacity: Option<f64>,
    now: DateTime<Utc>,
) -> Projection {
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let mut p = Projection::failed(f, String::new(), now);
    p.error = None;
    p.labels = labels;
    p.history = thin(&points, 200);
    p.capacity = capacity;
    p.usage = points.last().map(|x| x.1);
    if let (Some(u), Some(c)) = (p.usage, capacity) {
        if c > 0.0 {
            p.used = Some(u / c);
        }
    }
    let Some(capacity) = capacity else {
        p.error = Some(match &f.capacity {
            super::Capacity::Query(_) => "no capacity for this series: the capacity query has no series with its labels (`__name__` aside); for one number for all, write `scalar(…)`".into(),
            _ => "no capacity: the capacity query gave no number (`scalar(…)` of no series, or of several, is NaN)".into(),
        });
        return p;
    };
    let lookback = f.lookback.as_secs_f64();
    let enough = |pts: &[(f64, f64)]| {
        pts.len() >= MIN_POINTS
            && pts.last().map_or(0.0, |l| l.0) - pts.first().map_or(0.0, |l| l.0) >= lookback / 10.0
    };
    if let Some(u) = p.usage {
        if u >= capacity {
            p.verdict = Verdict::Full;
            p.days_left = Some(0.0);
            p.full_at = Some(now);
            p.note = Some("at or over its capacity now".into());
        }
    }
    // Glitches out; then the jumps decide what is fitted.
    let left_out = glitches(&jumps(&points));
    let points: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| !left_out.contains(i))
        .map(|(_, p)| *p)
        .collect();
    let found = jumps(&points);
    let drops: Vec<&Jump> = found.iter().filter(|j| !j.rise()).collect();
    let rises = found.len() - drops.len();
    let glitch_note = (!left_out.is_empty()).then(|| {
        format!(
            "{} point(s) left out as a glitch (a jump undone at once)",
            left_out.len()
        )
    });
    let join = |a: String| match &glitch_note {
        Some(g) => format!("{a}; {g}"),
        None => a,
    };
    let after = |j: &Jump| -> Result<&[(f64, f64)], String> {
        let rest = &points[j.to..];
        if enough(rest) {
            Ok(rest)
        } else {
            Err(format!(
                "a {} on {}: too little history since to fit",
                if j.rise() { "step up" } else { "drop" },
                day(points[j.to].0)
            ))
        }
    };
    let fitted: &[(f64, f64)] = if drops.len() >= 2 {
        if p.verdict != Verdict::Full {
            p.verdict = Verdict::Irregular;
        }
        p.note = Some(join(format!(
            "drops sharply {} times in the lookback (last on {}): a fill-and-clean pattern, which a straight line would misread; forecast its peaks instead",
            drops.len(),
            day(points[drops[drops.len() - 1].to].0)
        )));
        return p;
    } else if let Some(j) = drops
        .first()
        .copied()
        .or(if rises == 1 { found.first() } else { None })
    {
        // One drop (a clean-up, a volume emptied) or one step up (a
        // restore): the growth since is what counts.
        match after(j) {
            Ok(rest) => {
                p.note = Some(join(format!(
                    "a {} on {}: fitted from there",
                    if j.rise() { "step up" } else { "drop" },
                    day(points[j.to].0)
                )));
                rest
            }
            Err(why) => {
                if p.verdict != Verdict::Full {
                    p.verdict = Verdict::Unknown;
                }
                p.note = Some(join(why));
                return p;
            }
        }
    } else {
        if rises > 1 {
            p.note = Some(join(format!(
                "rises sharply {rises} times (a staircase): fitted as one line"
            )));
        } else {
            p.note.clone_from(&glitch_note);
        }
        &points
    };
    if !enough(fitted) {
        if p.verdict != Verdict::Full {
            p.verdict = Verdict::Unknown;
        }
        p.note = Some(format!(
            "too little history: {} point(s); a forecast needs {MIN_POINTS} over a tenth of the lookback",
            fitted.len()
        ));
        return p;
    }
    let Some(line) = least_squares(fitted) else {
        p.verdict = Verdict::Unknown;
        return p;
    };
    p.r2 = Some(line.r2);
    p.confidence = Some(Confidence::of(line.r2));
    p.growth_per_day = Some(line.slope * 86_400.0);
    p.fit_from = Some(line.from);
    p.fit_start = Some(line.start);
    if p.verdict == Verdict::Full {
        return p;
    }
    let t_now = now.timestamp_millis() as f64 / 1000.0;
    let horizon = t_now + f.horizon.as_secs_f64();
    match line.reaches(capacity, 0.0) {
        Some(t) if t <= horizon => {
            let t = t.max(t_now);
            p.full_at = date(t);
            let days = (t - t_now) / 86_400.0;
            p.days_left = Some(days);
            p.verdict = if days <= f.warn_within.as_secs_f64() / 86_400.0 {
                Verdict::FillingSoon
            } else {
                Verdict::Filling
            };
            let band = line.band(t);
            p.earliest = line
                .reaches(capacity, band)
                .and_then(|t| date(t.max(t_now)));
            p.latest = line
                .reaches(capacity, -band)
                .and_then(|t| date(t.max(t_now)));
        }
        Some(_) => {
            p.verdict = Verdict::NotFilling;
            if p.note.is_none() {
                p.note = Some(format!(
                    "not full within the horizon ({})",
                    crate::slo::promql::duration(f.horizon)
                ));
            }
        }
        None => {
            p.verdict = Verdict::NotFilling;
            if p.note.is_none() {
                p.note = Some("not growing".into());
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn forecast() -> Forecast {
        Forecast {
            name: "disk".into(),
            service: "db".into(),
            description: String::new(),
            usage: "u".into(),
            capacity: super::super::Capacity::Value(1000.0),
            lookback: Duration::from_secs(14 * 86_400),
            horizon: Duration::from_secs(90 * 86_400),
            warn_within: Duration::from_secs(30 * 86_400),
            labels: std::collections::BTreeMap::new(),
            file: "f.yaml".into(),
            pos: crate::runbook::position::Pos::default(),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn series(now: f64, f: impl Fn(usize, f64) -> f64) -> Vec<(f64, f64)> {
        (0..=1000)
            .map(|i| {
                let t = now - 14.0 * 86_400.0 + i as f64 * 1209.6;
                (t, f(i, t))
            })
            .collect()
    }

    #[test]
    fn a_straight_line_is_found_exactly_and_projected_to_its_date() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = 1_800_000_000.0;
        // 10 per day, at 500 now: 1000 in 50 days.
        let pts = series(t, |_, x| 500.0 + (x - t) * 10.0 / 86_400.0);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &pts,
            Some(1000.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::Filling);
        assert!((p.growth_per_day.unwrap() - 10.0).abs() < 1e-6);
        assert!((p.days_left.unwrap() - 50.0).abs() < 1e-3, "{p:?}");
        assert_eq!(p.confidence, Some(Confidence::High));
    }

    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn a_sawtooth_is_flagged_and_a_step_is_fitted_after() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = 1_800_000_000.0;
        let saw = series(t, |i, _| 100.0 + (i % 250) as f64 * 2.0);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &saw,
            Some(1000.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::Irregular);
        assert!(p.full_at.is_none());
        // A restore adds 300 half-way; growth is 5/day before and after.
        let step = series(t, |i, x| {
            400.0 + (x - t) * 5.0 / 86_400.0 + if i > 500 { 300.0 } else { 0.0 }
        });
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &step,
            Some(1000.0),
            now,
        );
        assert!((p.growth_per_day.unwrap() - 5.0).abs() < 1e-6, "{p:?}");
        assert!((p.days_left.unwrap() - 60.0).abs() < 1e-3);
        assert!(p.note.unwrap().contains("a step up on"));
        // The same restore spread over three samples is one step.
        let slow = series(t, |i, x| {
            400.0
                + (x - t) * 5.0 / 86_400.0
                + match i {
                    0..=500 => 0.0,
                    501 => 100.0,
                    502 => 200.0,
                    _ => 300.0,
                }
        });
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &slow,
            Some(1000.0),
            now,
        );
        assert!((p.days_left.unwrap() - 60.0).abs() < 1e-3, "{p:?}");
        // A scrape that read 0 twice is left out, not taken for two drops.
        let glitch = series(t, |i, x| {
            if i == 300 || i == 700 {
                0.0
            } else {
                500.0 + (x - t) * 10.0 / 86_400.0
            }
        });
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &glitch,
            Some(1000.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::Filling, "{p:?}");
        assert!((p.days_left.unwrap() - 50.0).abs() < 1e-3, "{p:?}");
        assert!(p.note.unwrap().contains("2 point(s) left out"));
        // A count of volumes growing to 10, with two deletions of one, is
        // no sawtooth.
        let count = series(t, |i, _| {
            (i / 100) as f64 - f64::from(u8::from(i > 300)) - f64::from(u8::from(i > 700))
        });
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &count,
            Some(20.0),
            now,
        );
        assert_ne!(p.verdict, Verdict::Irregular, "{p:?}");
    }

    #[test]
    fn shrinking_full_and_missing_history_say_so() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t = 1_800_000_000.0;
        let down = series(t, |_, x| 500.0 - (x - t + 14.0 * 86_400.0) / 86_400.0);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &down,
            Some(1000.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::NotFilling);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &down,
            Some(400.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::Full);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &down[..4],
            Some(1000.0),
            now,
        );
        assert_eq!(p.verdict, Verdict::Unknown);
        let p = project(
            &forecast(),
            std::collections::BTreeMap::new(),
            &down,
            None,
            now,
        );
        assert!(p.error.is_some());
    }
}

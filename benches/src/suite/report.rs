//! Samples to figures: per workload and target the median over the rounds, the min–max
//! (the noise the benchmark itself sees), the ratio to tuxfs, and the CPU; the terminal
//! table and the JSON file of every sample.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::figure::Sample;
use super::{Failure, Outcome};

/// One table row: a workload on a target, over every round.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub workload: String,
    pub target: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
    /// This target's median over tuxfs's median, when tuxfs has the figure.
    pub ratio_to_tuxfs: Option<f64>,
    /// Mean CPU per round as a share of one core over the workload's wall time.
    pub cpu_client_pct: f64,
    pub cpu_daemon_pct: Option<f64>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Rows in the order workloads and targets first appear in `samples`.
pub fn summarize(samples: &[Sample]) -> Vec<Row> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for s in samples {
        let k = (s.workload.clone(), s.target.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    // Group by workload, keeping first-seen order of workloads.
    let mut workloads: Vec<String> = Vec::new();
    for (w, _) in &keys {
        if !workloads.contains(w) {
            workloads.push(w.clone());
        }
    }
    let mut rows = Vec::new();
    for w in &workloads {
        let of = |t: &str| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| &s.workload == w && s.target == t)
                .collect()
        };
        let tux = of("tuxfs");
        let tux_median = {
            let mut v: Vec<f64> = tux.iter().map(|s| s.figure.value).collect();
            v.sort_by(f64::total_cmp);
            (!v.is_empty()).then(|| median(&v))
        };
        for (_, t) in keys.iter().filter(|(kw, _)| kw == w) {
            let ss = of(t);
            let mut v: Vec<f64> = ss.iter().map(|s| s.figure.value).collect();
            v.sort_by(f64::total_cmp);
            let med = median(&v);
            let n = ss.len() as f64;
            let share = |cpu: f64, secs: f64| 100.0 * cpu / secs.max(1e-9);
            let client = ss
                .iter()
                .map(|s| share(s.cpu_client_s, s.figure.secs))
                .sum::<f64>()
                / n;
            let daemon: Vec<f64> = ss
                .iter()
                .filter_map(|s| s.cpu_daemon_s.map(|d| share(d, s.figure.secs)))
                .collect();
            let mid = ss.iter().min_by(|a, b| {
                (a.figure.value - med)
                    .abs()
                    .total_cmp(&(b.figure.value - med).abs())
            });
            rows.push(Row {
                workload: w.clone(),
                target: t.clone(),
                unit: ss.first().map(|s| s.unit.clone()).unwrap_or_default(),
                median: med,
                min: v.first().copied().unwrap_or(0.0),
                max: v.last().copied().unwrap_or(0.0),
                rounds: ss.len(),
                ratio_to_tuxfs: tux_median.filter(|m| *m > 0.0).map(|m| med / m),
                cpu_client_pct: client,
                cpu_daemon_pct: (!daemon.is_empty())
                    .then(|| daemon.iter().sum::<f64>() / daemon.len() as f64),
                p50_us: mid.and_then(|s| s.figure.p50_us),
                p99_us: mid.and_then(|s| s.figure.p99_us),
            });
        }
    }
    rows
}

/// A figure with about three significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The terminal table (also the README table: it is Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | target | median | min–max | unit | ×tuxfs | p50/p99 µs | cpu client % | cpu daemon % |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for r in rows {
        let ratio = r.ratio_to_tuxfs.map_or("-".into(), |x| format!("{x:.2}"));
        let lat = match (r.p50_us, r.p99_us) {
            (Some(a), Some(b)) => format!("{a}/{b}"),
            _ => "-".into(),
        };
        let daemon = r.cpu_daemon_pct.map_or("-".into(), |d| format!("{d:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}–{} | {} | {ratio} | {lat} | {:.0} | {daemon} |",
            r.workload,
            r.target,
            num(r.median),
            num(r.min),
            num(r.max),
            r.unit,
            r.cpu_client_pct,
        );
    }
    out
}

fn failure_json(f: &Failure) -> Value {
    json!({"round": f.round, "target": f.target, "workload": f.workload, "error": f.error})
}

/// The JSON document: machine, configuration, every sample, the summary rows, failures.
pub fn to_json(machine: &[(String, String)], config: Value, outcome: &Outcome) -> Value {
    let samples: Vec<Value> = outcome
        .samples
        .iter()
        .map(|s| {
            json!({
                "round": s.round,
                "target": s.target,
                "workload": s.workload,
                "unit": s.unit,
                "value": s.figure.value,
                "secs": s.figure.secs,
                "p50_us": s.figure.p50_us,
                "p99_us": s.figure.p99_us,
                "cpu_client_s": s.cpu_client_s,
                "cpu_daemon_s": s.cpu_daemon_s,
            })
        })
        .collect();
    let rows: Vec<Value> = summarize(&outcome.samples)
        .iter()
        .map(|r| {
            json!({
                "workload": r.workload, "target": r.target, "unit": r.unit,
                "median": r.median, "min": r.min, "max": r.max, "rounds": r.rounds,
                "ratio_to_tuxfs": r.ratio_to_tuxfs,
                "cpu_client_pct": r.cpu_client_pct, "cpu_daemon_pct": r.cpu_daemon_pct,
            })
        })
        .collect();
    let machine: serde_json::Map<String, Value> = machine
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mounts: serde_json::Map<String, Value> = outcome
        .mount_options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "tool": "tuxfs-bench",
        "machine": machine,
        "mount_options": mounts,
        "config": config,
        "samples": samples,
        "summary": rows,
        "failures": outcome.failures.iter().map(failure_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::suite::figure::Figure;

    /// Synthetic samples: two rounds of two workloads on tuxfs and ext4.
    pub fn synthetic() -> Vec<Sample> {
        let mut v = Vec::new();
        for round in 0..3 {
            for (target, base) in [("tuxfs", 100.0), ("ext4", 300.0)] {
                for (workload, unit, k) in [
                    ("seq-write", "MB/s", 1.0),
                    ("append-fsync-1", "fsyncs/s", 10.0),
                ] {
                    v.push(Sample {
                        round,
                        target: target.into(),
                        workload: workload.into(),
                        unit: unit.into(),
                        figure: Figure {
                            value: base * k + round as f64,
                            secs: 2.0,
                            p50_us: Some(100),
                            p99_us: Some(900),
                        },
                        cpu_client_s: 1.0,
                        cpu_daemon_s: (target == "tuxfs").then_some(0.5),
                    });
                }
            }
        }
        v
    }

    #[test]
    fn summary_medians_ranges_and_ratios() {
        let rows = summarize(&synthetic());
        assert_eq!(rows.len(), 4);
        let ext4 = rows
            .iter()
            .find(|r| r.target == "ext4" && r.workload == "seq-write")
            .expect("row");
        assert_eq!(
            (ext4.median, ext4.min, ext4.max, ext4.rounds),
            (301.0, 300.0, 302.0, 3)
        );
        let ratio = ext4.ratio_to_tuxfs.expect("ratio");
        assert!((ratio - 301.0 / 101.0).abs() < 1e-9);
        assert_eq!(ext4.cpu_daemon_pct, None);
        let tux = rows.iter().find(|r| r.target == "tuxfs").expect("row");
        assert_eq!(tux.cpu_daemon_pct, Some(25.0));
        assert_eq!(tux.cpu_client_pct, 50.0);
        let t = table(&rows);
        assert!(
            t.contains("| seq-write | ext4 | 301 | 300–302 | MB/s | 2.98 |"),
            "{t}"
        );
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn json_has_every_sample() {
        let outcome = Outcome {
            samples: synthetic(),
            failures: vec![Failure {
                round: 0,
                target: "btrfs".into(),
                workload: "setup".into(),
                error: "mkfs.btrfs missing".into(),
            }],
            mount_options: vec![("tuxfs".into(), "fuse.tuxfs rw".into())],
        };
        let machine = vec![("kernel".to_string(), "6.18".to_string())];
        let v = to_json(&machine, json!({"quick": true}), &outcome);
        let text = serde_json::to_string(&v).expect("serialize");
        let back: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back["samples"].as_array().map(Vec::len), Some(12));
        assert_eq!(back["machine"]["kernel"], "6.18");
        assert_eq!(back["failures"][0]["target"], "btrfs");
        assert_eq!(back["summary"].as_array().map(Vec::len), Some(4));
    }
}

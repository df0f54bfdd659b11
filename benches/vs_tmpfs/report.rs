//! What a run prints: the machine and its load, one line per workload with the median,
//! minimum and maximum per operation of each side, the ratio to /dev/shm and the target,
//! and the same figures as JSON.

use crate::args::Mode;
use crate::json::{self, Json};
use crate::sys::DaemonUse;
use crate::workloads::{Goal, Sizes, Workload};
use std::fmt::Write as _;
use std::fs;

/// /proc/loadavg: the load averages, then tasks runnable and tasks in all.
#[derive(Clone, Debug, Default)]
pub struct Load {
    pub avg: [f64; 3],
    pub runnable: u32,
    pub tasks: u32,
}

impl Load {
    pub fn now() -> Load {
        let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut fields = text.split_whitespace();
        let mut avg = [f64::NAN; 3];
        for a in &mut avg {
            *a = fields
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
        }
        let (runnable, tasks) = fields
            .next()
            .and_then(|v| v.split_once('/'))
            .map(|(r, t)| (r.parse().unwrap_or(0), t.parse().unwrap_or(0)))
            .unwrap_or((0, 0));
        Load {
            avg,
            runnable,
            tasks,
        }
    }

    fn line(&self) -> String {
        format!(
            "load average {:.2} {:.2} {:.2}, {} runnable of {} tasks (this one included)",
            self.avg[0], self.avg[1], self.avg[2], self.runnable, self.tasks
        )
    }

    fn json(&self) -> Json {
        json::obj([
            ("avg_1m", self.avg[0].into()),
            ("avg_5m", self.avg[1].into()),
            ("avg_15m", self.avg[2].into()),
            ("runnable", self.runnable.into()),
            ("tasks", self.tasks.into()),
        ])
    }
}

/// The machine a run happened on, and when.
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub nproc: usize,
    pub load_start: Load,
    pub load_end: Load,
    /// Each mount's data mode and transport (`transport=` of its sidecars).
    pub transports: Vec<(&'static str, String)>,
}

impl Machine {
    pub fn now() -> Machine {
        let cpu = fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        Machine {
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu,
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_start: Load::now(),
            load_end: Load::default(),
            transports: Vec::new(),
        }
    }

    pub fn header(&self) -> String {
        let transports: Vec<String> = self
            .transports
            .iter()
            .map(|(mode, t)| format!("{mode} over {t}"))
            .collect();
        format!(
            "{}, Linux {}, {} CPUs ({})\nat the start: {}\nat the end:   {}\nmounts: {}\n",
            self.date,
            self.kernel,
            self.nproc,
            self.cpu,
            self.load_start.line(),
            self.load_end.line(),
            transports.join(", ")
        )
    }

    pub fn json(&self) -> Json {
        json::obj([
            ("date", self.date.as_str().into()),
            ("kernel", self.kernel.as_str().into()),
            ("cpu", self.cpu.as_str().into()),
            ("nproc", self.nproc.into()),
            ("load_start", self.load_start.json()),
            ("load_end", self.load_end.json()),
            (
                "transports",
                json::obj(
                    self.transports
                        .iter()
                        .map(|(mode, t)| (*mode, t.as_str().into())),
                ),
            ),
        ])
    }
}

/// One side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    Shm,
    Sectionfs(Mode),
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Shm => "/dev/shm",
            Side::Sectionfs(m) => m.name(),
        }
    }
}

/// The figures of one workload: seconds of each round, per side.
pub struct Row {
    pub workload: &'static Workload,
    /// Indexed like `Results::sides`.
    pub seconds: Vec<Vec<f64>>,
    /// Other runnable tasks as each timed region began, over all sides and rounds.
    pub others: Vec<u32>,
}

pub struct Results {
    pub sizes: Sizes,
    /// `/dev/shm` first.
    pub sides: Vec<Side>,
    pub rows: Vec<Row>,
    pub daemons: Vec<(Mode, DaemonUse)>,
    pub machine: Machine,
}

/// Median, minimum and maximum.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        Spread {
            median: median(v),
            min: v.iter().copied().fold(f64::NAN, f64::min),
            max: v.iter().copied().fold(f64::NAN, f64::max),
        }
    }

    fn scaled(self, by: f64) -> Spread {
        Spread {
            median: self.median / by,
            min: self.min / by,
            max: self.max / by,
        }
    }

    fn json(self) -> Json {
        json::obj([
            ("median", self.median.into()),
            ("min", self.min.into()),
            ("max", self.max.into()),
        ])
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_u32(v: &[u32]) -> f64 {
    median(&v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>())
}

/// Three significant digits or so, in the unit that suits `secs`.
pub fn fmt_time(secs: f64) -> String {
    let (unit, scale) = unit_of(secs);
    format!("{} {unit}", sig(secs * scale))
}

fn unit_of(secs: f64) -> (&'static str, f64) {
    if secs >= 1.0 {
        ("s", 1.0)
    } else if secs >= 1e-3 {
        ("ms", 1e3)
    } else if secs >= 1e-6 {
        ("µs", 1e6)
    } else {
        ("ns", 1e9)
    }
}

fn sig(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `median (min–max) unit`, all in the median's unit.
fn fmt_spread(s: Spread) -> String {
    let (unit, scale) = unit_of(s.median);
    if s.min == s.max {
        format!("{} {unit}", sig(s.median * scale))
    } else {
        format!(
            "{} ({}–{}) {unit}",
            sig(s.median * scale),
            sig(s.min * scale),
            sig(s.max * scale)
        )
    }
}

/// What a row says about one mode: its ratio and whether it meets its goal.
struct Verdict {
    ratio: f64,
    goal: Option<Goal>,
}

impl Verdict {
    fn met(&self) -> Option<bool> {
        self.goal.map(|g| self.ratio <= g.max)
    }

    fn cell(&self) -> String {
        match (self.goal, self.met()) {
            (Some(g), Some(met)) => format!(
                "<= {}{} {}",
                g.max,
                if g.from == "issue 13" { "" } else { "*" },
                if met { "met" } else { "MISSED" }
            ),
            _ => "report".into(),
        }
    }
}

impl Results {
    fn per_op(&self, row: &Row, side: usize) -> Spread {
        Spread::of(&row.seconds[side]).scaled((row.workload.ops)(&self.sizes) as f64)
    }

    fn verdict(&self, row: &Row, side: usize) -> Option<Verdict> {
        let Side::Sectionfs(mode) = self.sides[side] else {
            return None;
        };
        Some(Verdict {
            ratio: self.per_op(row, side).median / self.per_op(row, 0).median,
            goal: row.workload.goals[mode.index()],
        })
    }

    /// The human report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nsectionfs against /dev/shm in one run: time per operation, median of {} \
             round(s) (min–max); ratio of the medians",
            self.sizes.rounds
        );
        out.push_str(&self.machine.header());
        out.push('\n');
        let mut header = format!("{:<12} {:>7}", "workload", "ops");
        for &side in &self.sides {
            let _ = write!(header, " | {:<24}", side.label());
            if side != Side::Shm {
                let _ = write!(header, " {:>6} {:<15}", "ratio", "target");
            }
        }
        header.push_str(" | others");
        let _ = writeln!(out, "{header}");
        let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
        for row in &self.rows {
            let w = row.workload;
            let mut line = format!("{:<12} {:>7}", w.name, (w.ops)(&self.sizes));
            for side in 0..self.sides.len() {
                let _ = write!(line, " | {:<24}", fmt_spread(self.per_op(row, side)));
                if let Some(v) = self.verdict(row, side) {
                    let _ = write!(line, " {:>6.2} {:<15}", v.ratio, v.cell());
                }
            }
            let max = row.others.iter().max().copied().unwrap_or(0);
            let _ = write!(line, " | {} / {}", median_u32(&row.others), max);
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out.push('\n');
        for row in &self.rows {
            let w = row.workload;
            let _ = write!(out, "{:<12} {}", w.name, w.what);
            if let Some(a) = w.against {
                let _ = write!(out, "; /dev/shm: {a}");
                if w.name == "meta_read" {
                    let _ = write!(out, " ({} B)", self.sizes.meta_len);
                }
            }
            out.push('\n');
        }
        out.push_str(
            "\ntarget: the ratio sectionfs / /dev/shm from issue 13; * marks the data path's \
             earlier targets, which issue 13 keeps as they are.\n\
             others: tasks besides this one runnable as each timed region began (median / \
             max); above 0, the figures are not those of a quiet machine.\n",
        );
        let (mut met, mut total, mut missed) = (0, 0, String::new());
        for row in &self.rows {
            let mut misses = Vec::new();
            for side in 1..self.sides.len() {
                let Some(v) = self.verdict(row, side) else {
                    continue;
                };
                match (v.met(), v.goal) {
                    (Some(true), _) => met += 1,
                    (Some(false), Some(g)) => misses.push(format!(
                        "{} {:.2} > {}",
                        self.sides[side].label(),
                        v.ratio,
                        g.max
                    )),
                    _ => continue,
                }
                total += 1;
            }
            if !misses.is_empty() {
                let _ = writeln!(missed, "  {:<12} {}", row.workload.name, misses.join(", "));
            }
        }
        let _ = writeln!(out, "targets met: {met} of {total}");
        if !missed.is_empty() {
            let _ = write!(out, "missed:\n{missed}");
        }
        for (mode, used) in &self.daemons {
            let _ = writeln!(
                out,
                "daemon ({}) at the end: {} fds, {} KiB resident",
                mode.name(),
                used.fds,
                used.rss_kib
            );
        }
        out
    }

    pub fn json(&self) -> Json {
        let rows = self.rows.iter().map(|row| {
            let w = row.workload;
            let mut fields = vec![
                ("name".to_string(), Json::from(w.name)),
                ("what".into(), w.what.into()),
                ("against".into(), w.against.into()),
                ("ops".into(), (w.ops)(&self.sizes).into()),
                (
                    "others_runnable".into(),
                    json::arr(row.others.iter().copied()),
                ),
            ];
            for (i, &side) in self.sides.iter().enumerate() {
                let mut f = vec![
                    (
                        "seconds".to_string(),
                        json::arr(row.seconds[i].iter().copied()),
                    ),
                    ("per_op_s".into(), self.per_op(row, i).json()),
                ];
                if let Some(v) = self.verdict(row, i) {
                    f.push(("ratio".into(), v.ratio.into()));
                    f.push((
                        "target".into(),
                        v.goal.map_or(Json::Null, |g| {
                            json::obj([("max", g.max.into()), ("from", g.from.into())])
                        }),
                    ));
                    f.push(("met".into(), v.met().into()));
                }
                fields.push((
                    side.label().to_string(),
                    Json::Object(f.into_iter().collect()),
                ));
            }
            Json::Object(fields.into_iter().collect())
        });
        json::obj([
            ("benchmark", Json::from("vs_tmpfs")),
            ("machine", self.machine.json()),
            ("rounds", self.sizes.rounds.into()),
            ("sides", json::arr(self.sides.iter().map(|s| s.label()))),
            ("workloads", Json::Array(rows.collect())),
            (
                "daemons",
                json::obj(self.daemons.iter().map(|(m, u)| {
                    (
                        m.name(),
                        json::obj([("fds", u.fds.into()), ("rss_kib", u.rss_kib.into())]),
                    )
                })),
            ),
        ])
    }
}

//! The markdown table: one line per (workload, store, variant), the best of the rounds on each
//! side, the ratio Interlock / cqrs-es and the ratio to the raw floor, then the goals of SPEC
//! §11 and what each side measured.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::out::Row;

/// Every round of one measurement on one side: the best value, or why it failed.
#[derive(Default)]
struct Cell {
    unit: String,
    best: Option<f64>,
    failed: Option<String>,
    detail: String,
}

impl Cell {
    fn add(&mut self, row: &Row) {
        self.unit.clone_from(&row.unit);
        if !row.ok {
            self.failed.get_or_insert_with(|| row.detail.clone());
            return;
        }
        self.detail.clone_from(&row.detail);
        let better = |a: f64, b: f64| if row.unit == "ms" { a.min(b) } else { a.max(b) };
        self.best = Some(self.best.map_or(row.value, |b| better(b, row.value)));
    }

    fn value(&self) -> Option<f64> {
        if self.failed.is_some() {
            None
        } else {
            self.best
        }
    }

    fn show(&self) -> String {
        match (&self.failed, self.best) {
            (Some(_), _) => "**FAILED**".to_owned(),
            (None, Some(v)) if self.unit == "ms" => format!("{v:.2} ms"),
            (None, Some(v)) => format!("{} {}", thousands(v), self.unit),
            (None, None) => "—".to_owned(),
        }
    }
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

type Key = (String, String, String);

/// Prints the report; returns false when an Interlock or floor result was wrong.
#[allow(clippy::print_stdout)]
pub(crate) fn print(text: &str) -> bool {
    let mut order: Vec<Key> = Vec::new();
    let mut cells: HashMap<(Key, String), Cell> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let Ok(row) = serde_json::from_str::<Row>(line) else {
            continue;
        };
        let key = (row.workload.clone(), row.store.clone(), row.variant.clone());
        if !order.contains(&key) {
            order.push(key.clone());
        }
        cells.entry((key, row.side.clone())).or_default().add(&row);
    }
    order.sort_by(|a, b| a.0.cmp(&b.0).then(store_rank(&a.1).cmp(&store_rank(&b.1))));

    let empty = Cell::default();
    let cell = |key: &Key, side: &str| cells.get(&(key.clone(), side.to_owned())).unwrap_or(&empty);
    let ratio = |ours: &Cell, theirs: &Cell| match (ours.value(), theirs.value()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".to_owned(),
    };

    let mut out = String::new();
    out.push_str("| workload | store | variant | Interlock | cqrs-es 0.5 | Interlock / cqrs-es | raw floor | Interlock / floor | notes |\n");
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|---|\n");
    let mut all_ok = true;
    for key in &order {
        let (ours, theirs, floor) = (
            cell(key, "interlock"),
            cell(key, "cqrs-es"),
            cell(key, "floor"),
        );
        all_ok &= ours.failed.is_none() && floor.failed.is_none();
        let mut notes = Vec::new();
        for (side, c) in [("Interlock", ours), ("cqrs-es", theirs), ("floor", floor)] {
            if let Some(why) = &c.failed {
                notes.push(format!("{side} FAILED: {why}"));
            } else if key.0 == "W4" && !c.detail.is_empty() {
                notes.push(format!("{side}: {}", c.detail));
            }
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.0,
            key.1,
            key.2,
            ours.show(),
            theirs.show(),
            ratio(ours, theirs),
            floor.show(),
            ratio(ours, floor),
            notes.join("; ")
        );
    }
    out.push_str(
        "\nRatios are of the unit shown: for cmd/s and events/s above 1 means Interlock is faster; \
         for ms (reload times) below 1 means Interlock is faster.\n",
    );
    out.push_str(&goals(&order, &cell));
    out.push_str("\nWhat each side measured:\n\n");
    let mut seen = Vec::new();
    for key in &order {
        for side in ["interlock", "cqrs-es", "floor"] {
            let c = cell(key, side);
            let line = format!("- {} {}, {side}: {}", key.0, key.1, c.detail);
            if !c.detail.is_empty() && key.0 != "W4" && !seen.contains(&line) {
                seen.push(line);
            }
        }
    }
    out.push_str(&seen.join("\n"));
    println!("{out}");
    all_ok
}

fn store_rank(store: &str) -> u8 {
    match store {
        "memory" => 0,
        "sqlite" => 1,
        _ => 2,
    }
}

/// The goals of SPEC §11 (issue 9), met or missed and by how much.
fn goals<'a>(order: &[Key], cell: &dyn Fn(&Key, &str) -> &'a Cell) -> String {
    let key = |w: &str, s: &str, v: &str| (w.to_owned(), s.to_owned(), v.to_owned());
    let ratio = |k: &Key| match (cell(k, "interlock").value(), cell(k, "cqrs-es").value()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let mut lines = vec!["\nGoals:\n".to_owned()];
    let mut goal = |what: &str, got: Option<f64>, target: f64, higher: bool| {
        let verdict = match got {
            None => "not measured".to_owned(),
            Some(g) if (higher && g >= target) || (!higher && g <= target) => {
                format!("met ({g:.2})")
            }
            Some(g) => format!(
                "missed: {g:.2}, {:.0}% of the way",
                100.0 * if higher { g / target } else { target / g }
            ),
        };
        lines.push(format!("- {what}: {verdict}"));
    };
    goal(
        "W1 in-memory, sequential ≥ 2× cqrs-es",
        ratio(&key("W1", "memory", "sequential")),
        2.0,
        true,
    );
    goal(
        "W1 in-memory, 8 tasks ≥ 2× cqrs-es",
        ratio(&key("W1", "memory", "8 tasks")),
        2.0,
        true,
    );
    goal(
        "W1 PostgreSQL, 8 tasks ≥ 3× cqrs-es",
        ratio(&key("W1", "postgres", "8 tasks")),
        3.0,
        true,
    );
    goal(
        "W2 PostgreSQL full replay ≤ 0.6× cqrs-es time",
        ratio(&key("W2", "postgres", "full replay")),
        0.6,
        false,
    );
    goal(
        "W2 in-memory full replay ≤ 0.6× cqrs-es time",
        ratio(&key("W2", "memory", "full replay")),
        0.6,
        false,
    );
    let w3 = cell(&key("W3", "memory", "catch-up"), "interlock")
        .value()
        .map(|v| v / 1e6);
    goal(
        "W3 in-memory catch-up ≥ 1M events/s (in millions)",
        w3,
        1.0,
        true,
    );
    let w4: Vec<_> = order.iter().filter(|k| k.0 == "W4").collect();
    let w4_ok = !w4.is_empty()
        && w4
            .iter()
            .all(|k| cell(k, "interlock").failed.is_none() && cell(k, "interlock").best.is_some());
    lines.push(format!(
        "- W4 Interlock: 0 lost updates, every command succeeds with the retry middleware: {}",
        if w4_ok { "met" } else { "MISSED" }
    ));
    lines.join("\n") + "\n"
}

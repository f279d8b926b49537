//! One JSON line per measurement on stdout; `compare.sh` keeps the lines that start with `{`
//! (MemStore prints its own lines there too).

use std::time::Duration;

use serde::Serialize;

#[derive(Serialize)]
pub struct Row {
    pub side: &'static str,
    pub workload: &'static str,
    pub store: &'static str,
    pub variant: &'static str,
    pub n: u64,
    /// `cmd/s`, `events/s` or `ms`.
    pub unit: &'static str,
    pub value: f64,
    pub ok: bool,
    /// What exactly was measured, counts (conflicts, lost updates), or why the result is wrong.
    pub detail: String,
}

impl Row {
    pub fn new(workload: &'static str, store: &'static str, variant: &'static str, n: u64) -> Self {
        Self {
            side: "cqrs-es",
            workload,
            store,
            variant,
            n,
            unit: "",
            value: 0.0,
            ok: true,
            detail: String::new(),
        }
    }

    /// `n` items in `elapsed`, as items per second.
    pub fn rate(mut self, unit: &'static str, elapsed: Duration) -> Self {
        self.unit = unit;
        self.value = self.n as f64 / elapsed.as_secs_f64();
        self
    }

    pub fn millis(mut self, elapsed: Duration) -> Self {
        self.unit = "ms";
        self.value = elapsed.as_secs_f64() * 1000.0;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Marks the row failed unless `ok`: a wrong result is reported, never a time.
    pub fn check(mut self, ok: bool, why: impl FnOnce() -> String) -> Self {
        if !ok {
            self.ok = false;
            self.detail = why();
        }
        self
    }

    pub fn print(&self) {
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode a result: {e}"),
        }
    }
}

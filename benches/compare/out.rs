//! One JSON line per measurement on stdout, the format both sides share (`report` reads them).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Row {
    /// `interlock`, `cqrs-es` or `floor`.
    pub(crate) side: String,
    pub(crate) workload: String,
    pub(crate) store: String,
    pub(crate) variant: String,
    pub(crate) n: u64,
    /// `cmd/s`, `events/s` or `ms`.
    pub(crate) unit: String,
    pub(crate) value: f64,
    pub(crate) ok: bool,
    /// What exactly was measured, counts (conflicts, lost updates), or why the result is wrong.
    pub(crate) detail: String,
}

impl Row {
    pub(crate) fn new(workload: &str, store: &str, variant: &str, n: u64) -> Self {
        Self {
            side: "interlock".to_owned(),
            workload: workload.to_owned(),
            store: store.to_owned(),
            variant: variant.to_owned(),
            n,
            unit: String::new(),
            value: 0.0,
            ok: true,
            detail: String::new(),
        }
    }

    /// The same measurement done raw, without a framework.
    pub(crate) fn floor(workload: &str, store: &str, variant: &str, n: u64) -> Self {
        Self {
            side: "floor".to_owned(),
            ..Self::new(workload, store, variant, n)
        }
    }

    /// `n` items in `elapsed`, as items per second.
    pub(crate) fn rate(mut self, unit: &str, elapsed: Duration) -> Self {
        self.unit = unit.to_owned();
        self.value = self.n as f64 / elapsed.as_secs_f64();
        self
    }

    pub(crate) fn millis(mut self, elapsed: Duration) -> Self {
        self.unit = "ms".to_owned();
        self.value = elapsed.as_secs_f64() * 1000.0;
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Marks the row failed unless `ok`: a wrong result is reported, never a time.
    pub(crate) fn check(mut self, ok: bool, why: impl FnOnce() -> String) -> Self {
        if !ok {
            self.ok = false;
            self.detail = why();
        }
        self
    }

    #[allow(clippy::print_stdout)]
    pub(crate) fn print(&self) {
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode a result: {e}"),
        }
    }
}

//! What the benchmarks share: the run mode and iteration settings from the environment and the
//! median of the measured blocks (the scratch database guard is [`crate::db`]).

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

/// How the benchmark binary was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Without `--bench` (as `cargo test --benches` runs it): a smoke test.
    Smoke,
    /// With `--bench` and `BENCH_QUICK` set (not empty, not `0`).
    Quick,
    /// With `--bench`.
    Full,
}

impl Mode {
    /// The mode of this run, from the arguments and `BENCH_QUICK`.
    pub fn from_env() -> Self {
        let bench = std::env::args().any(|a| a == "--bench");
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        match (bench, quick) {
            (false, _) => Mode::Smoke,
            (true, true) => Mode::Quick,
            (true, false) => Mode::Full,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Smoke => "smoke test (no --bench)",
            Mode::Quick => "quick (BENCH_QUICK=1)",
            Mode::Full => "full",
        })
    }
}

/// Iteration settings: the mode, measured rounds and iterations per block.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub rounds: usize,
    pub iters: usize,
}

impl Settings {
    /// The settings of this run: `(rounds, iters)` for each of smoke, quick and full, then
    /// `BENCH_ROUNDS` and `BENCH_ITERS` override them (at least 1 each).
    pub fn from_env(smoke: (usize, usize), quick: (usize, usize), full: (usize, usize)) -> Self {
        let mode = Mode::from_env();
        let (rounds, iters) = match mode {
            Mode::Smoke => smoke,
            Mode::Quick => quick,
            Mode::Full => full,
        };
        Settings {
            mode,
            rounds: env_usize("BENCH_ROUNDS").unwrap_or(rounds).max(1),
            iters: env_usize("BENCH_ITERS").unwrap_or(iters).max(1),
        }
    }
}

/// A `usize` from the environment variable `name`, if it is set and parses.
pub fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.parse().ok()
}

/// A measurement with a total order: `f64` by `total_cmp`, `Duration` by `Ord`.
pub trait Sample: Copy {
    fn sample_cmp(&self, other: &Self) -> Ordering;
}

impl Sample for f64 {
    fn sample_cmp(&self, other: &Self) -> Ordering {
        f64::total_cmp(self, other)
    }
}

impl Sample for Duration {
    fn sample_cmp(&self, other: &Self) -> Ordering {
        self.cmp(other)
    }
}

/// Sorts `v` and returns its middle element (the upper one of an even count).
pub fn median<T: Sample>(v: &mut [T]) -> T {
    v.sort_by(T::sample_cmp);
    v[v.len() / 2]
}

//! How a fleet's jobs run: on up to [`MigrateOptions::parallel`] scoped worker threads with a
//! connection each, in waves ([`MigrateOptions::waves`]) that each start only within the failure
//! budget, and what the run reports (each tenant's outcome and how long it took).

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::migrate::failure::outcome_of;
use crate::migrate::migrator::Migrator;
use crate::options::{FailurePolicy, MigrateOptions, Progress, Wave, WaveEnd};
use crate::report::{MigrationReport, TenantOutcome};
use crate::tenant::TenantId;

/// What [`Migrator::run_fleet`] returns: the report, and how long each tenant's job took
/// (`None`: no job, or not started).
pub(crate) struct Ran {
    pub(crate) report: MigrationReport,
    pub(crate) durations: Vec<Option<Duration>>,
}

impl Ran {
    /// The report, as the fleet operations return it: an error when a tenant failed or was
    /// not started.
    pub(crate) fn into_result(self) -> Result<MigrationReport> {
        crate::trace::finish_fleet(&self.report);
        if self.report.is_success() {
            Ok(self.report)
        } else {
            Err(Error::FleetMigration {
                report: self.report,
            })
        }
    }
}

/// What the workers share.
struct Shared<'a, J, F> {
    jobs: &'a [(usize, J)],
    tenants: &'a [TenantId],
    outcomes: Mutex<Vec<TenantOutcome>>,
    durations: Mutex<Vec<Option<Duration>>>,
    stop: AtomicBool,
    counters: Mutex<(usize, usize)>,
    op: F,
    started: Instant,
}

impl Migrator {
    /// Runs `op` for each job on up to `opts.parallel` scoped worker threads with a connection
    /// each (the first worker reuses `first`, when given), wave by wave; tenants without a job
    /// are up to date. `held` goes into the report as it is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_fleet<J, F>(
        &self,
        first: Option<&mut PgConnection>,
        database_url: &str,
        opts: &MigrateOptions,
        (started, held): (Instant, Vec<(TenantId, String)>),
        tenants: Vec<TenantId>,
        jobs: Vec<(usize, J)>,
        op: F,
    ) -> Ran
    where
        J: Sync,
        F: Fn(&mut PgConnection, &TenantId, &J) -> Result<TenantOutcome> + Sync,
    {
        let (jobs, stages) = stages(&opts.waves, &tenants, jobs);
        let mut outcomes: Vec<TenantOutcome> = vec![TenantOutcome::UpToDate; tenants.len()];
        for (i, _) in &jobs {
            outcomes[*i] = TenantOutcome::Skipped;
        }
        let shared = Shared {
            jobs: &jobs,
            tenants: &tenants,
            outcomes: Mutex::new(outcomes),
            durations: Mutex::new(vec![None; tenants.len()]),
            stop: AtomicBool::new(false),
            counters: Mutex::new((0, 0)),
            op,
            started,
        };
        let workers = opts.parallel.max(1).min(jobs.len());
        let mut first = first;
        let mut conns: Vec<WorkerConn<'_>> = (0..workers)
            .map(|_| match first.take() {
                Some(c) => WorkerConn::Borrowed(c),
                None => WorkerConn::None,
            })
            .collect();
        let mut stopped = None;
        for (wave, stage) in stages.iter().enumerate() {
            if wave > 0 {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(why) = between_waves(opts, &shared.counters, wave, stages.len()) {
                    stopped = Some(why);
                    break;
                }
            }
            self.run_wave(&mut conns, database_url, opts, &shared, stage.clone());
        }
        let outcomes = shared
            .outcomes
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let durations = shared
            .durations
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        // The tenants no worker ran (up to date without a job, or not started) count in the
        // run's progress now.
        #[cfg(feature = "metrics")]
        for (outcome, took) in outcomes.iter().zip(&durations) {
            if took.is_none() {
                crate::metrics::fleet_tenant_not_run(outcome);
            }
        }
        Ran {
            report: MigrationReport {
                tenants: tenants.into_iter().zip(outcomes).collect(),
                elapsed: started.elapsed(),
                held,
                stopped,
                run: None,
            },
            durations,
        }
    }

    /// Runs the jobs of `stage` on the workers' connections, one scoped thread each.
    fn run_wave<J, F>(
        &self,
        conns: &mut [WorkerConn<'_>],
        database_url: &str,
        opts: &MigrateOptions,
        shared: &Shared<'_, J, F>,
        stage: Range<usize>,
    ) where
        J: Sync,
        F: Fn(&mut PgConnection, &TenantId, &J) -> Result<TenantOutcome> + Sync,
    {
        // Workers report to the caller's subscriber, under the run's span.
        let (dispatch, run) = (
            tracing::dispatcher::get_default(|d| d.clone()),
            tracing::Span::current(),
        );
        let next = AtomicUsize::new(stage.start);
        std::thread::scope(|scope| {
            for conn in conns.iter_mut().take(stage.len()) {
                let (next, dispatch, run, end) = (&next, &dispatch, &run, stage.end);
                scope.spawn(move || {
                    let _dispatch = tracing::dispatcher::set_default(dispatch);
                    while !shared.stop.load(Ordering::SeqCst) {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k >= end {
                            break;
                        }
                        let (i, job) = &shared.jobs[k];
                        let tenant = &shared.tenants[*i];
                        let _span = crate::trace::fleet_tenant_span!(run, tenant).entered();
                        let began = Instant::now();
                        let outcome = match conn.get(database_url, self) {
                            Ok(c) => match (shared.op)(c, tenant, job) {
                                Ok(o) => o,
                                Err(e) => outcome_of(&e),
                            },
                            Err(e) => outcome_of(&e),
                        };
                        let took = began.elapsed();
                        crate::trace::finish_tenant(&outcome, took);
                        #[cfg(feature = "metrics")]
                        crate::metrics::fleet_tenant(&outcome, took);
                        let failed = matches!(outcome, TenantOutcome::Failed { .. });
                        if failed {
                            // A killed backend or a lost connection: reconnect for the next.
                            if let Ok(c) = conn.get(database_url, self) {
                                if c.batch_execute("SELECT 1").is_err() {
                                    *conn = WorkerConn::None;
                                }
                            }
                            if opts.on_failure == FailurePolicy::Stop {
                                shared.stop.store(true, Ordering::SeqCst);
                            }
                        }
                        let (done, nfailed) = {
                            let mut c = shared.counters.lock().unwrap_or_else(|e| e.into_inner());
                            c.0 += 1;
                            c.1 += usize::from(failed);
                            *c
                        };
                        if let Some(progress) = &opts.progress {
                            progress(&Progress {
                                done,
                                total: shared.jobs.len(),
                                failed: nfailed,
                                elapsed: shared.started.elapsed(),
                                tenant: tenant.clone(),
                                outcome: outcome.clone(),
                            });
                        }
                        shared.durations.lock().unwrap_or_else(|e| e.into_inner())[*i] = Some(took);
                        shared.outcomes.lock().unwrap_or_else(|e| e.into_inner())[*i] = outcome;
                    }
                });
            }
        });
    }
}

/// Between two waves: the budget, the pause, the check. `Some(why)` stops the run.
fn between_waves(
    opts: &MigrateOptions,
    counters: &Mutex<(usize, usize)>,
    wave: usize,
    waves: usize,
) -> Option<String> {
    let (ran, failed) = *counters.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(budget) = opts.budget {
        if !budget.allows(failed, ran) {
            return Some(format!(
                "failure budget spent after wave {wave} of {waves}: {failed} of {ran} tenants failed"
            ));
        }
    }
    if !opts.pause.is_zero() {
        std::thread::sleep(opts.pause);
    }
    if let Some(check) = &opts.check {
        let end = WaveEnd {
            wave: wave - 1,
            waves,
            ran,
            failed,
        };
        if !check(&end) {
            return Some(format!("stopped by the check after wave {wave} of {waves}"));
        }
    }
    None
}

/// The jobs reordered wave by wave, and each wave's range of them: a `Tenants` wave takes its
/// tenants' jobs, a `Percent` wave its share of all the jobs (rounded up) from those left, `Rest`
/// (and the end of the list) what is left. Empty waves are dropped.
fn stages<J>(
    waves: &[Wave],
    tenants: &[TenantId],
    jobs: Vec<(usize, J)>,
) -> (Vec<(usize, J)>, Vec<Range<usize>>) {
    let total = jobs.len();
    let mut left: Vec<Option<(usize, J)>> = jobs.into_iter().map(Some).collect();
    let mut ordered: Vec<(usize, J)> = Vec::with_capacity(total);
    let mut stages = Vec::new();
    let mut take =
        |ordered: &mut Vec<(usize, J)>, set: Option<&BTreeSet<&TenantId>>, max: usize| {
            let start = ordered.len();
            for slot in left.iter_mut() {
                if ordered.len() - start >= max {
                    break;
                }
                let wanted = slot
                    .as_ref()
                    .is_some_and(|(i, _)| set.is_none_or(|s| s.contains(&tenants[*i])));
                if wanted {
                    ordered.extend(slot.take());
                }
            }
            start..ordered.len()
        };
    for wave in waves {
        let range = match wave {
            Wave::Tenants(list) => {
                let set: BTreeSet<&TenantId> = list.iter().collect();
                take(&mut ordered, Some(&set), usize::MAX)
            }
            Wave::Percent(p) => {
                let n = (total * usize::from((*p).min(100))).div_ceil(100);
                take(&mut ordered, None, n)
            }
            Wave::Rest => take(&mut ordered, None, usize::MAX),
        };
        if !range.is_empty() {
            stages.push(range);
        }
    }
    let rest = take(&mut ordered, None, usize::MAX);
    if !rest.is_empty() {
        stages.push(rest);
    }
    (ordered, stages)
}

/// A fleet worker's connection: the caller's (first worker), its own, or none yet.
enum WorkerConn<'a> {
    Borrowed(&'a mut PgConnection),
    Owned(PgConnection),
    None,
}

impl WorkerConn<'_> {
    /// The connection, opened from `url` when there is none.
    fn get(&mut self, url: &str, migrator: &Migrator) -> Result<&mut PgConnection> {
        if let WorkerConn::None = self {
            *self = WorkerConn::Owned(migrator.open(url)?);
        }
        match self {
            WorkerConn::Borrowed(c) => Ok(c),
            WorkerConn::Owned(c) => Ok(c),
            WorkerConn::None => unreachable!("just opened"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<TenantId> {
        (0..n)
            .map(|i| TenantId::new(format!("t{i}")).unwrap())
            .collect()
    }

    #[test]
    fn waves_split_the_jobs() {
        let tenants = ids(10);
        let jobs: Vec<(usize, ())> = (0..10).map(|i| (i, ())).collect();
        let waves = [
            Wave::Tenants(vec![tenants[7].clone()]),
            Wave::Percent(25),
            Wave::Rest,
        ];
        let (ordered, ranges) = stages(&waves, &tenants, jobs);
        assert_eq!(ranges, vec![0..1, 1..4, 4..10]);
        assert_eq!(ordered[0].0, 7);
        let mut seen: Vec<usize> = ordered.iter().map(|(i, _)| *i).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let three = ids(3);
        let (_, one) = stages(&[], &three, (0..3).map(|i| (i, ())).collect());
        assert_eq!(one, vec![0..3]);
    }
}

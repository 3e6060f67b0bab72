//! What every measured mode starts and stops the same way: the run's clock (wall time and CPU
//! since it began), the control that ends it at its deadline or message count, and the progress
//! line and Ctrl-C handler that watch it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::Args;
use crate::cpu::CpuTimes;
use crate::producer::RunControl;
use crate::report::{spawn_progress, Progress};
use crate::stats::Stats;

use super::produce::stop_on_ctrl_c;

/// When a run began, in wall time and in this process's CPU time.
pub struct RunClock {
    pub t0: Instant,
    cpu0: CpuTimes,
}

impl RunClock {
    pub fn start() -> RunClock {
        RunClock {
            t0: Instant::now(),
            cpu0: CpuTimes::now(),
        }
    }

    /// The control of a run of `args`: its warm-up plus its duration from the start, or its
    /// message count, whichever comes first.
    pub fn control(&self, args: &Args) -> Arc<RunControl> {
        Arc::new(RunControl::new(
            self.t0 + args.warmup_duration + args.run_duration(),
            args.message_count,
        ))
    }

    /// Wall time and CPU time since the start.
    pub fn wall_and_cpu(&self) -> (Duration, CpuTimes) {
        (self.t0.elapsed(), CpuTimes::now().since(&self.cpu0))
    }
}

/// A running mode's progress line and Ctrl-C handler (which stops `control`).
pub struct Watch {
    progress: Progress,
    ctrl_c: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub fn start(
        label: &'static str,
        stats: &Arc<Stats>,
        control: &Arc<RunControl>,
        args: &Args,
    ) -> Watch {
        Watch {
            progress: spawn_progress(label, stats.clone(), args.report_interval()),
            ctrl_c: stop_on_ctrl_c(control.clone()),
        }
    }

    pub fn stop(self) {
        drop(self.progress);
        self.ctrl_c.abort();
    }
}

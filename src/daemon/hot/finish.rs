//! Stages 3 to 5 of a job whose file is known (an [`Outcome`]), in order:
//! [`Rules::decide`](super::decide::Rules::decide) (`decide.rs`), then
//! [`Shared::answer_decided`] (`answer.rs`), then [`Shared::record`] (`record.rs`).

use super::answer::Answered;
use super::decide::{Decided, Live};
use super::state::{Job, Outcome, Routed, Shared};

impl Shared {
    /// Decides `job` from its outcome, answers the kernel, and records the finding.
    pub fn finish(&self, mut job: Job, outcome: Outcome) -> Routed {
        let decided = self.rules().decide(job.question(), outcome, &Live { shared: self, job: &job });
        log_slow(&job, &decided);
        job.execve_check = decided.execve_check;
        match self.answer_decided(job, decided) {
            Answered::Done => Routed::Done,
            Answered::Routed(r) => r,
            Answered::Record(r) => {
                self.record(*r);
                Routed::Done
            }
        }
    }
}

fn log_slow(job: &Job, d: &Decided) {
    tracing::debug!(
        container = %job.container.identity.id,
        allow = d.verdict.allow,
        finding = ?d.verdict.finding.map(|f| f.0),
        micros = job.received.elapsed().as_micros() as u64,
        "slow-path decision"
    );
}

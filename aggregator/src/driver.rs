//! Runs a whole block's plan on this machine, each level's jobs in parallel.

use prover_gpu::Prover;
use rayon::prelude::*;

use crate::error::{AggError, Result};
use crate::jobs::{AggJob, ProofBytes};
use crate::plan::{BlockPlan, PlannedKind};
use crate::recursion::AggregationCircuits;

impl AggregationCircuits {
    /// Folds a block's batch proofs, in order, into its block proof.
    pub fn aggregate(&self, prover: &Prover, batches: &[ProofBytes]) -> Result<ProofBytes> {
        let plan = BlockPlan::new(batches.len())?;
        let mut out: Vec<Option<ProofBytes>> = vec![None; plan.jobs.len()];
        for (j, batch) in plan.level(0).zip(batches) {
            out[j.id] = Some(batch.clone());
        }
        for level in 1..=plan.depth() {
            let jobs: Vec<_> = plan.level(level).cloned().collect();
            let results: Vec<(usize, Result<ProofBytes>)> = jobs
                .par_iter()
                .map(|j| {
                    let get =
                        |id: usize| out[id].clone().ok_or_else(|| AggError::InvalidJob(format!("job {id} not done")));
                    let job = match &j.kind {
                        PlannedKind::Batch { .. } => Err(AggError::InvalidJob("a batch proof above level 0".into())),
                        PlannedKind::Merge { children } => children
                            .iter()
                            .map(|&c| get(c))
                            .collect::<Result<Vec<_>>>()
                            .map(|children| AggJob::Merge { children }),
                    };
                    (j.id, job.and_then(|job| self.run(prover, &job)))
                })
                .collect();
            for (id, r) in results {
                out[id] = Some(r?);
            }
        }
        out[plan.root()].take().ok_or_else(|| AggError::InvalidJob("the root was not proven".into()))
    }
}

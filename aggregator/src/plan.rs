//! The aggregation tree of a block: which jobs to run, level by level.
//!
//! Level 0 is the batch proofs themselves, the leaves. Each next level merges neighbours left to
//! right; an odd node out moves up unchanged and is merged at a higher level. The root is always a
//! merge (a block of one batch merges its batch proof alone), so every block proof is a proof of
//! the merge circuit. The jobs of one level are independent: the farm proves them in parallel.

use serde::{Deserialize, Serialize};

use crate::error::{AggError, Result};

/// Index of a job in its plan.
pub type JobId = usize;

/// What a planned job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannedKind {
    /// A leaf: the proof of the batch with this index in the block, as its batch job made it.
    Batch {
        /// Position of the batch in the block.
        batch: usize,
    },
    /// Merge the outputs of two earlier jobs (or of one, at the root of a one-batch block).
    Merge {
        /// The left (earlier) child.
        left: JobId,
        /// The right child.
        right: Option<JobId>,
    },
}

/// One job of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedJob {
    /// Its index.
    pub id: JobId,
    /// Its level: all jobs of a level can run at once once the level below is done.
    pub level: usize,
    /// What it does.
    pub kind: PlannedKind,
}

/// The jobs of one block, in an order where children come first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockPlan {
    /// The jobs.
    pub jobs: Vec<PlannedJob>,
}

impl BlockPlan {
    /// The plan for `batches` batches (at least one).
    pub fn new(batches: usize) -> Result<Self> {
        if batches == 0 {
            return Err(AggError::InvalidJob("a block needs at least one batch".into()));
        }
        let mut jobs: Vec<PlannedJob> =
            (0..batches).map(|batch| PlannedJob { id: batch, level: 0, kind: PlannedKind::Batch { batch } }).collect();
        let mut frontier: Vec<JobId> = (0..batches).collect();
        let mut level = 0;
        while frontier.len() > 1 || jobs[frontier[0]].level == 0 {
            level += 1;
            let mut next = Vec::with_capacity(frontier.len().div_ceil(2));
            for pair in frontier.chunks(2) {
                match *pair {
                    [left, right] => {
                        let id = jobs.len();
                        jobs.push(PlannedJob { id, level, kind: PlannedKind::Merge { left, right: Some(right) } });
                        next.push(id);
                    }
                    [only] if frontier.len() == 1 => {
                        let id = jobs.len();
                        jobs.push(PlannedJob { id, level, kind: PlannedKind::Merge { left: only, right: None } });
                        next.push(id);
                    }
                    [only] => next.push(only),
                    _ => unreachable!("chunks(2) yields one or two"),
                }
            }
            frontier = next;
        }
        Ok(Self { jobs })
    }

    /// The root job, whose output is the block proof.
    pub fn root(&self) -> JobId {
        self.jobs.len() - 1
    }

    /// Number of merge levels above the batch proofs.
    pub fn depth(&self) -> usize {
        self.jobs.last().map_or(0, |j| j.level)
    }

    /// The jobs of one level.
    pub fn level(&self, level: usize) -> impl Iterator<Item = &PlannedJob> {
        self.jobs.iter().filter(move |j| j.level == level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(plan: &BlockPlan, id: JobId) -> Vec<usize> {
        match plan.jobs[id].kind {
            PlannedKind::Batch { batch } => vec![batch],
            PlannedKind::Merge { left, right } => {
                let mut v = leaves(plan, left);
                if let Some(r) = right {
                    v.extend(leaves(plan, r));
                }
                v
            }
        }
    }

    #[test]
    fn every_batch_once_in_order_with_a_merge_root() {
        for n in 1..40 {
            let plan = BlockPlan::new(n).expect("plan");
            assert_eq!(leaves(&plan, plan.root()), (0..n).collect::<Vec<_>>(), "n = {n}");
            assert!(matches!(plan.jobs[plan.root()].kind, PlannedKind::Merge { .. }));
            let merges = plan.jobs.iter().filter(|j| matches!(j.kind, PlannedKind::Merge { .. })).count();
            assert_eq!(merges, (n - 1).max(1));
            for j in &plan.jobs {
                if let PlannedKind::Merge { left, right } = j.kind {
                    assert!(plan.jobs[left].level < j.level);
                    assert!(right.is_none_or(|r| plan.jobs[r].level < j.level));
                }
            }
            assert_eq!(plan.depth(), (n as f64).log2().ceil().max(1.0) as usize);
        }
        assert!(BlockPlan::new(0).is_err());
    }
}

//! The aggregation tree of a block: which jobs to run, level by level.
//!
//! Level 0 is the batch proofs themselves, the leaves. Each next level merges neighbours left to
//! right in groups of [`MERGE_ARITY`]; what is left over moves up unchanged and joins a merge of
//! the next level, unless nothing was merged at this level, in which case the leftover two or
//! three are merged now. So n batches cost ⌈(n − 1)/(ARITY − 1)⌉ merges, the fewest merges of
//! at most ARITY children can do. The root is always a merge (a block of one batch merges its
//! batch proof alone), so every block proof is a proof of the merge circuit. The jobs of one level
//! are independent: the farm proves them in parallel.

use serde::{Deserialize, Serialize};

use crate::error::{AggError, Result};
use crate::recursion::MERGE_ARITY;

/// Index of a job in its plan.
pub type JobId = usize;

/// What a planned job does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlannedKind {
    /// A leaf: the proof of the batch with this index in the block, as its batch job made it.
    Batch {
        /// Position of the batch in the block.
        batch: usize,
    },
    /// Merge the outputs of earlier jobs, two to [`MERGE_ARITY`] of them (or one, at the root
    /// of a one-batch block), in block order.
    Merge {
        /// The children, earliest first.
        children: Vec<JobId>,
    },
}

/// One job of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
            let mut next = Vec::with_capacity(frontier.len().div_ceil(MERGE_ARITY) + MERGE_ARITY);
            let merge = |children: &[JobId], jobs: &mut Vec<PlannedJob>| {
                let id = jobs.len();
                jobs.push(PlannedJob { id, level, kind: PlannedKind::Merge { children: children.to_vec() } });
                id
            };
            for group in frontier.chunks(MERGE_ARITY) {
                // A full group, or a level too small for one (its only group).
                if group.len() == MERGE_ARITY || frontier.len() < MERGE_ARITY {
                    next.push(merge(group, &mut jobs));
                } else {
                    // A leftover joins a merge of the next level.
                    next.extend_from_slice(group);
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
        match &plan.jobs[id].kind {
            PlannedKind::Batch { batch } => vec![*batch],
            PlannedKind::Merge { children } => children.iter().flat_map(|&c| leaves(plan, c)).collect(),
        }
    }

    #[test]
    fn every_batch_once_in_order_with_a_merge_root_and_the_fewest_merges() {
        for n in 1..70 {
            let plan = BlockPlan::new(n).expect("plan");
            assert_eq!(leaves(&plan, plan.root()), (0..n).collect::<Vec<_>>(), "n = {n}");
            assert!(matches!(plan.jobs[plan.root()].kind, PlannedKind::Merge { .. }));
            let merges = plan.jobs.iter().filter(|j| matches!(j.kind, PlannedKind::Merge { .. })).count();
            assert_eq!(merges, (n - 1).div_ceil(MERGE_ARITY - 1).max(1), "n = {n}");
            for j in &plan.jobs {
                if let PlannedKind::Merge { children } = &j.kind {
                    assert!((1..=MERGE_ARITY).contains(&children.len()));
                    assert!(children.len() > 1 || n == 1, "a merge of one only for one batch");
                    assert!(children.iter().all(|&c| plan.jobs[c].level < j.level));
                }
            }
            // Each level but the last merges full groups, so the depth is about log_ARITY n.
            let mut depth = 1;
            while MERGE_ARITY.pow(depth as u32) < n {
                depth += 1;
            }
            assert!(plan.depth() <= depth + 1, "n = {n}: depth {}", plan.depth());
        }
        assert!(BlockPlan::new(0).is_err());
    }
}

//! The sequencer's metrics page (Prometheus text, served by `crate::server::serve_metrics`): jobs
//! by state, proof latency, failures by whom they are charged to, given-up jobs queued again,
//! proven and settled transactions, the signature checker's prepared keys.

use std::fmt::Write;

use super::service::Shared;

/// The metrics page.
pub fn render(shared: &Shared) -> String {
    let core = shared.lock();
    let s = core.status();
    let c = &core.counters;
    let up = core.uptime().max(1e-9);
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE rollup_jobs gauge");
    for j in &s.jobs {
        let _ = writeln!(out, "rollup_jobs{{state=\"{}\"}} {}", j.state, j.count);
    }
    let _ = writeln!(out, "# TYPE rollup_txs_accepted_total counter\nrollup_txs_accepted_total {}", s.accepted_txs);
    let _ = writeln!(out, "# TYPE rollup_txs_proven_total counter\nrollup_txs_proven_total {}", c.proven_txs);
    let _ = writeln!(out, "# TYPE rollup_txs_settled_total counter\nrollup_txs_settled_total {}", s.settled_txs);
    let _ = writeln!(out, "# TYPE rollup_txs_pending gauge\nrollup_txs_pending {}", s.pending_txs);
    let _ = writeln!(out, "# TYPE rollup_txs_open gauge\nrollup_txs_open {}", s.open_txs);
    // Workers whose lease request is held for a job: the farm's idle provers.
    let _ = writeln!(out, "# TYPE rollup_workers_waiting gauge\nrollup_workers_waiting {}", s.workers_waiting);
    // A batch sealed by its timeout costs a full batch proof for fewer transactions, and is
    // sealed only for a worker waiting: a high share is a farm with more provers than its load
    // needs (docs/services.md, "Batches").
    let _ = writeln!(
        out,
        "# TYPE rollup_batches_sealed_total counter\nrollup_batches_sealed_total{{by=\"full\"}} {}\n\
         rollup_batches_sealed_total{{by=\"timeout\"}} {}",
        c.sealed.0, c.sealed.1
    );
    let _ =
        writeln!(out, "# TYPE rollup_blocks_settled_total counter\nrollup_blocks_settled_total {}", s.blocks_settled);
    let _ = writeln!(out, "# TYPE rollup_proof_latency_seconds summary");
    let _ = writeln!(
        out,
        "rollup_proof_latency_seconds_sum {}\nrollup_proof_latency_seconds_count {}",
        c.proof_seconds.0, c.proof_seconds.1
    );
    // How long jobs wait for a worker: near zero on a farm with workers idle (their lease
    // requests are held, and take a job as it comes), growing when the farm is short of provers.
    let _ = writeln!(out, "# TYPE rollup_job_queue_seconds summary");
    let _ = writeln!(
        out,
        "rollup_job_queue_seconds_sum {}\nrollup_job_queue_seconds_count {}",
        c.queue_seconds.0, c.queue_seconds.1
    );
    // The age of the oldest pending job: the farm's backlog in seconds, the figure to scale a
    // farm by (it grows while the provers fall behind the load, whatever the load).
    let _ = writeln!(
        out,
        "# TYPE rollup_oldest_pending_job_seconds gauge\nrollup_oldest_pending_job_seconds {}",
        s.oldest_pending_ms as f64 / 1e3
    );
    let _ = writeln!(
        out,
        "# TYPE rollup_job_failures_total counter\nrollup_job_failures_total{{charged_to=\"job\"}} {}\n\
         rollup_job_failures_total{{charged_to=\"worker\"}} {}",
        c.job_failures, c.worker_faults
    );
    // Given-up jobs (`rollup_jobs{state="failed"}`) halt the chain until `rollup jobs retry`.
    let _ = writeln!(out, "# TYPE rollup_job_retries_total counter\nrollup_job_retries_total {}", c.retried_jobs);
    // The signature checker's prepared keys: `kept` lookups found one, `prepared` ones made it. A
    // low share kept means more active signers than the cache holds.
    let keys = shared.signature_keys();
    let (kept, prepared) = keys.hits_and_misses();
    let _ = writeln!(
        out,
        "# TYPE rollup_signature_keys_total counter\nrollup_signature_keys_total{{source=\"kept\"}} {kept}\n\
         rollup_signature_keys_total{{source=\"prepared\"}} {prepared}"
    );
    let _ = writeln!(out, "# TYPE rollup_signature_keys_kept gauge\nrollup_signature_keys_kept {}", keys.len());
    let _ = writeln!(out, "# TYPE rollup_proven_tps gauge\nrollup_proven_tps {}", c.proven_txs as f64 / up);
    let _ = writeln!(out, "# TYPE rollup_settled_tps gauge\nrollup_settled_tps {}", s.settled_txs as f64 / up);
    out
}

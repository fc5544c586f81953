//! `rollup jobs`: the operator's view of the prover farm's work in flight, and the way on after a
//! job was given up (which halts the chain: a block needs every proof).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use proto::v1::prover_farm_client::ProverFarmClient;
use proto::v1::{JobInfo, JobKind, ListJobsRequest, RetryJobsRequest};
use serde_json::json;
use tonic::transport::Channel;

use crate::auth::{self, AddToken};
use crate::prover::Client;

/// Options of `rollup jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Sequencer (the farm's coordinator) URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:50051")]
    pub sequencer: String,
    /// The farm's bearer token (or ROLLUP_TOKEN).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Print one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only the jobs in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Without one: list the jobs in flight.
    #[command(subcommand)]
    pub action: Option<JobsAction>,
}

/// What `rollup jobs` does besides listing.
#[derive(Debug, Subcommand)]
pub enum JobsAction {
    /// Queue given-up jobs again, their attempts renewed (once what failed them is fixed).
    Retry {
        /// The jobs' ids, as `rollup jobs` lists them.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        ids: Vec<u64>,
        /// Every given-up job.
        #[arg(long)]
        failed: bool,
    },
}

/// A job's state, as the coordinator names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    /// Waiting for a worker.
    Pending,
    /// Held by a worker.
    Leased,
    /// Proven, its block not yet settled.
    Done,
    /// Given up after too many failures.
    Failed,
}

impl StateArg {
    fn name(self) -> &'static str {
        match self {
            StateArg::Pending => "pending",
            StateArg::Leased => "leased",
            StateArg::Done => "done",
            StateArg::Failed => "failed",
        }
    }
}

async fn client(url: &str, token: Option<String>) -> Result<Client> {
    let channel = Channel::from_shared(url.to_string())
        .with_context(|| format!("bad sequencer URL {url}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to the sequencer at {url}"))?;
    Ok(ProverFarmClient::with_interceptor(channel, AddToken(auth::resolve(token))).max_decoding_message_size(64 << 20))
}

fn refused(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// The jobs in flight, oldest first, only those in `state` if given.
pub async fn list(url: &str, token: Option<String>, state: Option<StateArg>) -> Result<Vec<JobInfo>> {
    let req = ListJobsRequest { state: state.map_or("", StateArg::name).into() };
    Ok(client(url, token).await?.list_jobs(req).await.map_err(refused)?.into_inner().jobs)
}

/// Queues given-up jobs again (`ids` empty: all of them); returns the jobs queued.
pub async fn retry(url: &str, token: Option<String>, ids: Vec<u64>) -> Result<Vec<JobInfo>> {
    let req = RetryJobsRequest { job_ids: ids };
    Ok(client(url, token).await?.retry_jobs(req).await.map_err(refused)?.into_inner().jobs)
}

/// What a job proves, in words.
pub fn describe(j: &JobInfo) -> String {
    match j.kind() {
        JobKind::Batch => format!("batch {}", j.batch),
        JobKind::Aggregate => format!("merge {} of block {}", j.node, j.height),
        JobKind::Unspecified => "unknown".into(),
    }
}

fn to_json(j: &JobInfo) -> serde_json::Value {
    let mut v = json!({
        "id": j.job_id, "job": describe(j), "state": j.state, "failures": j.failures, "lapses": j.lapses,
    });
    match j.kind() {
        JobKind::Batch => v["batch"] = json!(j.batch),
        JobKind::Aggregate => (v["height"], v["node"]) = (json!(j.height), json!(j.node)),
        JobKind::Unspecified => {}
    }
    if !j.worker.is_empty() {
        (v["worker"], v["lease_ends_unix_ms"]) = (json!(j.worker), json!(j.deadline_unix_ms));
    }
    if !j.reason.is_empty() {
        v["reason"] = json!(j.reason);
    }
    if j.state == "pending" {
        v["pending_ms"] = json!(j.pending_ms);
    }
    v
}

/// `rollup jobs`.
pub async fn run(a: JobsArgs) -> Result<()> {
    match a.action {
        None => {
            let jobs = list(&a.sequencer, a.token, a.state).await?;
            if a.json {
                println!("{}", json!({ "jobs": jobs.iter().map(to_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            if jobs.is_empty() {
                println!("no {}jobs in flight", a.state.map_or(String::new(), |s| format!("{} ", s.name())));
                return Ok(());
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i128;
            println!("{:<20}  {:<22}  {:<8}  {:>8}  {:>6}  detail", "id", "job", "state", "failures", "lapses");
            for j in &jobs {
                let detail = match j.state.as_str() {
                    "leased" => format!(
                        "{}, lease ends in {:.1} s",
                        j.worker,
                        (j.deadline_unix_ms as i128 - now).max(0) as f64 / 1e3
                    ),
                    "failed" => j.reason.clone(),
                    "pending" => format!("waiting {:.1} s for a worker", j.pending_ms as f64 / 1e3),
                    _ => String::new(),
                };
                println!(
                    "{:<20}  {:<22}  {:<8}  {:>8}  {:>6}  {detail}",
                    j.job_id,
                    describe(j),
                    j.state,
                    j.failures,
                    j.lapses
                );
            }
            let given_up = jobs.iter().filter(|j| j.state == "failed").count();
            if given_up > 0 {
                println!(
                    "{given_up} given up: the chain waits for them. Once the cause is fixed, \
                     `rollup jobs retry --failed` queues them again."
                );
            }
        }
        // Clap makes `--failed` and ids exclusive: no ids means every given-up job.
        Some(JobsAction::Retry { ids, failed: _ }) => {
            let queued = retry(&a.sequencer, a.token, ids).await?;
            if a.json {
                println!("{}", json!({ "retried": queued.iter().map(to_json).collect::<Vec<_>>() }));
            } else if queued.is_empty() {
                println!("no job is given up");
            } else {
                for j in &queued {
                    println!("queued again: {} (job {})", describe(j), j.job_id);
                }
            }
        }
    }
    Ok(())
}

//! Client commands: send transfers and swaps, read accounts, the head and the sequencer's status.

use std::path::PathBuf;

use anyhow::{Context, Result};
use circuits::bls::SignedTx;
use circuits::{Direction, Swap, Transfer, Tx};
use clap::Args;
use proto::v1::sequencer_client::SequencerClient;
use proto::v1::settlement_client::SettlementClient;
use proto::v1::{Empty, GetAccountRequest, SubmitTxRequest};
use serde_json::json;

use crate::cli::DirectionArg;
use crate::keyfile::{self, to_hex};

/// Options of `rollup transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Sequencer URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub sequencer: String,
    /// The sender's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Sender account.
    #[arg(long)]
    pub from: u32,
    /// Receiver account.
    #[arg(long)]
    pub to: u32,
    /// Token id.
    #[arg(long)]
    pub token: u16,
    /// Amount.
    #[arg(long)]
    pub amount: u64,
    /// Fee in the fee token.
    #[arg(long, default_value_t = 0)]
    pub fee: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `rollup swap`.
#[derive(Debug, Args)]
pub struct SwapArgs {
    /// Sequencer URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub sequencer: String,
    /// The trader's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Trader account.
    #[arg(long)]
    pub account: u32,
    /// Pool id.
    #[arg(long)]
    pub pool: u32,
    /// Which token is paid in.
    #[arg(long, value_enum)]
    pub direction: DirectionArg,
    /// Amount paid in.
    #[arg(long)]
    pub amount_in: u64,
    /// Least acceptable output.
    #[arg(long, default_value_t = 1)]
    pub min_out: u64,
    /// Fee in the fee token.
    #[arg(long, default_value_t = 0)]
    pub fee: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `rollup account`.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Sequencer URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub sequencer: String,
    /// Account id.
    pub id: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `rollup head`.
#[derive(Debug, Args)]
pub struct HeadArgs {
    /// Settlement URL.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub settlement: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `rollup status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Sequencer URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub sequencer: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

async fn sequencer(url: &str) -> Result<SequencerClient<tonic::transport::Channel>> {
    SequencerClient::connect(url.to_string()).await.with_context(|| format!("connecting to the sequencer at {url}"))
}

async fn send(url: &str, key: &std::path::Path, build: impl FnOnce(u32) -> Tx, sender: u32, json: bool) -> Result<()> {
    let sk = keyfile::read(key)?;
    let mut c = sequencer(url).await?;
    let nonce = c
        .get_account(GetAccountRequest { account: sender })
        .await
        .context("reading the sender's nonce")?
        .into_inner()
        .nonce;
    let tx = build(nonce);
    let signed = SignedTx { signature: sk.sign_tx(&tx), tx };
    let r = c
        .submit_tx(SubmitTxRequest { signed_tx: signed.encode() })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    let r = r.into_inner();
    if json {
        println!("{}", json!({"tx_hash": to_hex(&r.tx_hash), "sequence": r.sequence, "nonce": nonce}));
    } else {
        println!("accepted as #{} ({})", r.sequence, to_hex(&r.tx_hash));
    }
    Ok(())
}

/// `rollup transfer`.
pub async fn transfer(a: TransferArgs) -> Result<()> {
    let (from, to, token, amount, fee) = (a.from, a.to, a.token, a.amount, a.fee);
    send(&a.sequencer, &a.key, |nonce| Tx::Transfer(Transfer { from, to, token, amount, fee, nonce }), from, a.json)
        .await
}

/// `rollup swap`.
pub async fn swap(a: SwapArgs) -> Result<()> {
    let direction = match a.direction {
        DirectionArg::AToB => Direction::AToB,
        DirectionArg::BToA => Direction::BToA,
    };
    let (account, pool, amount_in, min_out, fee) = (a.account, a.pool, a.amount_in, a.min_out, a.fee);
    send(
        &a.sequencer,
        &a.key,
        |nonce| Tx::Swap(Swap { account, pool, direction, amount_in, min_out, fee, nonce }),
        account,
        a.json,
    )
    .await
}

/// `rollup account`.
pub async fn account(a: AccountArgs) -> Result<()> {
    let r = sequencer(&a.sequencer).await?.get_account(GetAccountRequest { account: a.id }).await;
    let r = r.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?.into_inner();
    let balances: serde_json::Map<String, serde_json::Value> =
        r.balances.iter().map(|b| (b.token.to_string(), json!(b.amount))).collect();
    if a.json {
        println!(
            "{}",
            json!({"account": r.account, "nonce": r.nonce, "pubkey_hash": to_hex(&r.pubkey_hash), "balances": balances})
        );
    } else {
        println!("account {} nonce {}", r.account, r.nonce);
        for b in &r.balances {
            println!("  token {:>4}  {}", b.token, b.amount);
        }
    }
    Ok(())
}

/// `rollup head`.
pub async fn head(a: HeadArgs) -> Result<()> {
    let mut c = SettlementClient::connect(a.settlement.clone())
        .await
        .with_context(|| format!("connecting to {}", a.settlement))?;
    let h = c.get_head(Empty {}).await?.into_inner();
    if a.json {
        println!("{}", json!({"height": h.height, "state_root": to_hex(&h.state_root), "settled_txs": h.settled_txs}));
    } else {
        println!("height {}  root {}  settled txs {}", h.height, to_hex(&h.state_root), h.settled_txs);
    }
    Ok(())
}

/// `rollup status`.
pub async fn status(a: StatusArgs) -> Result<()> {
    let s = sequencer(&a.sequencer).await?.get_status(Empty {}).await?.into_inner();
    let jobs: serde_json::Map<String, serde_json::Value> =
        s.jobs.iter().map(|j| (j.state.clone(), json!(j.count))).collect();
    if a.json {
        println!(
            "{}",
            json!({
                "state_root": to_hex(&s.state_root), "accepted_txs": s.accepted_txs, "pending_txs": s.pending_txs,
                "settled_txs": s.settled_txs, "proven_txs": s.proven_txs, "open_txs": s.open_txs, "batches": s.batches,
                "blocks_settled": s.blocks_settled, "jobs": jobs, "workers_waiting": s.workers_waiting,
                "oldest_pending_ms": s.oldest_pending_ms,
            })
        );
    } else {
        println!("root {}", to_hex(&s.state_root));
        println!("txs: {} accepted, {} pending, {} settled", s.accepted_txs, s.pending_txs, s.settled_txs);
        println!(
            "batches {} sealed, {} txs in the open one; blocks settled {}",
            s.batches, s.open_txs, s.blocks_settled
        );
        for j in &s.jobs {
            println!("  jobs {:<8} {}", j.state, j.count);
        }
        println!("workers waiting for a job: {}", s.workers_waiting);
        if s.oldest_pending_ms > 0 {
            println!("the oldest pending job has waited {:.1} s for a worker", s.oldest_pending_ms as f64 / 1e3);
        }
        let given_up = s.jobs.iter().find(|j| j.state == "failed").map_or(0, |j| j.count);
        if given_up > 0 {
            println!(
                "{given_up} jobs given up: no block settles past them. `rollup jobs --state failed` shows why; \
                 `rollup jobs retry --failed` queues them again."
            );
        }
    }
    Ok(())
}

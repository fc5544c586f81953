//! End to end with separate processes of the built binary on loopback: transactions proven,
//! aggregated and settled with equal roots; a worker killed mid-job and its job finished by
//! another; the sequencer killed and restarted with nothing lost or doubled; settlement restarted
//! with its head kept; tampered blocks refused; malformed, oversized and unauthenticated requests
//! refused with the right codes; the operator's `rollup jobs`. The first sequencer and settlement
//! node build their circuits; the ones started later read the verifier keys `rollup circuits`
//! wrote meanwhile, and carry on with the data the first ones made. The first worker builds its
//! circuits, the second reads the prover data `rollup circuits` wrote.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use circuits::bls::{SignedTx, G1_LEN};
use circuits::genesis::devnet_key;
use circuits::{Transfer, Tx};
use common::{channel, exited, free_port, kill, spawn, wait_for, write_circuit_files, Proc};
use proto::v1::prover_farm_client::ProverFarmClient;
use proto::v1::sequencer_client::SequencerClient;
use proto::v1::settlement_client::SettlementClient;
use proto::v1::*;
use tonic::transport::Channel;
use tonic::Code;

const TOKEN: &str = "e2e-token";

struct Net {
    dir: PathBuf,
    settlement_port: u16,
    sequencer_port: u16,
    metrics_port: u16,
    /// The verifier keys file the services started from now on read (`--verifier-keys`).
    keys: Option<PathBuf>,
}

const NETWORK: [&str; 4] = ["--capacity", "4", "--genesis-accounts", "8"];

impl Net {
    fn settlement(&self, data: &str, port: u16) -> Proc {
        self.settlement_with_metrics(data, port, None)
    }

    fn settlement_with_metrics(&self, data: &str, port: u16, metrics: Option<u16>) -> Proc {
        let (listen, data) = (format!("127.0.0.1:{port}"), self.dir.join(data));
        let metrics = metrics.map(|m| format!("127.0.0.1:{m}"));
        let mut args =
            vec!["settlement", "--listen", &listen, "--data-dir", data.to_str().expect("utf8"), "--token", TOKEN];
        if let Some(m) = &metrics {
            args.extend(["--metrics", m.as_str()]);
        }
        args.extend(NETWORK);
        if let Some(keys) = &self.keys {
            args.extend(["--verifier-keys", keys.to_str().expect("utf8")]);
        }
        spawn(&self.dir, &format!("settlement-{port}.log"), &args)
    }

    fn sequencer(&self, n: u32) -> Proc {
        self.sequencer_with(n, NETWORK, self.keys.as_deref())
    }

    fn sequencer_with(&self, n: u32, network: [&str; 4], keys: Option<&std::path::Path>) -> Proc {
        let listen = format!("127.0.0.1:{}", self.sequencer_port);
        let settlement = format!("http://127.0.0.1:{}", self.settlement_port);
        let metrics = format!("127.0.0.1:{}", self.metrics_port);
        let data = self.dir.join("q");
        let mut args = vec![
            "sequencer",
            "--listen",
            &listen,
            "--settlement",
            &settlement,
            "--data-dir",
            data.to_str().expect("utf8"),
            "--token",
            TOKEN,
            // Long enough that the first four submissions make one batch (a 300 ms timeout could
            // fire between two of them on a loaded machine and split the first block); short
            // enough to seal the last three soon.
            "--batch-timeout-ms",
            "1500",
            "--block-batches",
            "2",
            "--block-time-ms",
            "1000",
            "--lease-ms",
            "4000",
            "--metrics",
            &metrics,
        ];
        args.extend(network);
        if let Some(keys) = keys {
            args.extend(["--verifier-keys", keys.to_str().expect("utf8")]);
        }
        spawn(&self.dir, &format!("sequencer-{n}.log"), &args)
    }

    /// A worker process that builds its circuits, or reads them from `prover_data`.
    fn prover(&self, name: &str, workers: u32, prover_data: Option<&std::path::Path>) -> Proc {
        let url = format!("http://127.0.0.1:{}", self.sequencer_port);
        let workers = workers.to_string();
        let mut args =
            vec!["prover", "--coordinator", &url, "--token", TOKEN, "--name", name, "--backend", "cpu", "--workers"];
        args.push(&workers);
        if let Some(path) = prover_data {
            args.extend(["--prover-data", path.to_str().expect("utf8")]);
        }
        spawn(&self.dir, &format!("{name}.log"), &args)
    }
}

/// A service's metrics page, fetched as Prometheus would.
async fn metrics_page(port: u16) -> String {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("metrics");
    tokio::io::AsyncWriteExt::write_all(&mut sock, b"GET /metrics HTTP/1.1\r\n\r\n").await.expect("write");
    let mut page = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut sock, &mut page).await.expect("read");
    page
}

fn transfer(from: u32, nonce: u32) -> Vec<u8> {
    let tx = Tx::Transfer(Transfer { from, to: from % 7 + 1, token: 1, amount: 100 + u64::from(nonce), fee: 1, nonce });
    SignedTx { signature: devnet_key(from).sign_tx(&tx), tx }.encode()
}

async fn status(c: &mut SequencerClient<Channel>) -> SequencerStatus {
    c.get_status(Empty {}).await.expect("status").into_inner()
}

fn jobs(s: &SequencerStatus, state: &str) -> u64 {
    s.jobs.iter().find(|j| j.state == state).map_or(0, |j| j.count)
}

async fn settled(c: &mut SequencerClient<Channel>, n: u64, secs: u64) -> SequencerStatus {
    let c = c.clone();
    wait_for(&format!("{n} settled transactions"), secs, || {
        let mut c = c.clone();
        async move {
            let s = c.get_status(Empty {}).await.ok()?.into_inner();
            assert_eq!(jobs(&s, "failed"), 0, "a job was given up");
            (s.settled_txs >= n).then_some(s)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end() {
    let dir = std::env::temp_dir().join(format!("rollup-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut net = Net {
        dir: dir.clone(),
        settlement_port: free_port(),
        sequencer_port: free_port(),
        metrics_port: free_port(),
        keys: None,
    };
    let s = net.settlement("s", net.settlement_port);
    let q = net.sequencer(1);
    // The verifier keys and prover data, for the services and the worker started later.
    let (mut circuits_cmd, files) = write_circuit_files(&dir, NETWORK[1]);
    let mut seq = SequencerClient::new(channel(net.sequencer_port).await);
    let mut set = SettlementClient::new(channel(net.settlement_port).await);

    // Health, malformed and oversized input, missing tokens.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(net.sequencer_port).await);
    let h = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health");
    assert_eq!(h.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let e = seq.submit_tx(SubmitTxRequest { signed_tx: vec![7; 50] }).await.expect_err("garbage");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = seq.submit_tx(SubmitTxRequest { signed_tx: vec![0; 100 << 10] }).await.expect_err("oversized");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let mut bad_sig = transfer(1, 0);
    let n = bad_sig.len();
    bad_sig[n - G1_LEN..].copy_from_slice(&SignedTx::decode(&transfer(2, 0)).expect("tx").signature.to_bytes());
    let e = seq.submit_tx(SubmitTxRequest { signed_tx: bad_sig }).await.expect_err("wrong signature");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut farm = ProverFarmClient::new(channel(net.sequencer_port).await);
    let e = farm.lease_job(LeaseJobRequest { worker_id: "x".into(), wait_ms: 0 }).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = set.submit_block(SubmitBlockRequest { block: Some(Block::default()) }).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);

    // A full batch (4 slots), then a worker killed while it holds the job.
    for from in 1..=4 {
        seq.submit_tx(SubmitTxRequest { signed_tx: transfer(from, 0) }).await.expect("valid transfer");
    }
    let e = seq.submit_tx(SubmitTxRequest { signed_tx: transfer(1, 0) }).await.expect_err("replay");
    assert_eq!(e.code(), Code::AlreadyExists);
    let w1 = net.prover("w1", 1, None);
    let c = seq.clone();
    wait_for("a leased job", 180, || {
        let mut c = c.clone();
        async move { (jobs(&c.get_status(Empty {}).await.ok()?.into_inner(), "leased") > 0).then_some(()) }
    })
    .await;
    kill(w1);
    // Two workers in one process, sharing one backend and one set of circuits: read from the
    // prover data, where the first worker built its own.
    let exit = exited(&mut circuits_cmd, "rollup circuits --verifier-keys-out --prover-data-out", 300).await;
    assert!(exit.success(), "rollup circuits: {exit:?}");
    let w2 = net.prover("w2", 2, Some(&files.prover_data));
    let first = settled(&mut seq, 4, 300).await;
    assert_eq!(first.blocks_settled, 1);
    let log = std::fs::read_to_string(dir.join("w1.log")).unwrap_or_default();
    assert!(log.contains("circuits built"), "{log}");
    let log = std::fs::read_to_string(dir.join("w2.log")).unwrap_or_default();
    assert_eq!(log.matches("proving backend").count(), 1, "one backend for both workers: {log}");
    assert_eq!(log.matches("circuits read").count(), 1, "one set of circuits for both workers: {log}");
    assert!(!log.contains("circuits built"), "{log}");
    for name in ["w2-0", "w2-1"] {
        assert!(log.lines().any(|l| l.contains("registered") && l.contains(name)), "{name} registered: {log}");
    }
    let log = std::fs::read_to_string(dir.join("sequencer-1.log")).unwrap_or_default();
    assert!(log.contains("lease lapsed"), "the killed worker's job was re-issued after its lease lapsed");

    // The sequencer killed right after acknowledging, and restarted: nothing lost, nothing doubled.
    for from in 5..=7 {
        seq.submit_tx(SubmitTxRequest { signed_tx: transfer(from, 0) }).await.expect("valid transfer");
    }
    let before = status(&mut seq).await;
    net.keys = Some(files.keys.clone());
    kill(q);
    // Restarted from the verifier keys, on the data directory made with built circuits: it
    // checks the workers' proofs with them from here on.
    let q = net.sequencer(2);
    let mut seq = SequencerClient::new(channel(net.sequencer_port).await);
    let after = status(&mut seq).await;
    assert_eq!((after.accepted_txs, after.state_root.clone()), (before.accepted_txs, before.state_root.clone()));
    let e = seq.submit_tx(SubmitTxRequest { signed_tx: transfer(5, 0) }).await.expect_err("replay after restart");
    assert_eq!(e.code(), Code::AlreadyExists);
    let done = settled(&mut seq, 7, 300).await;
    assert_eq!(done.accepted_txs, 7);
    let head = set.get_head(Empty {}).await.expect("head").into_inner();
    assert_eq!(head.state_root, done.state_root, "settled root equals the sequencer's");
    let log = std::fs::read_to_string(dir.join("sequencer-2.log")).unwrap_or_default();
    assert!(log.contains("verifier keys read") && !log.contains("circuits built"), "{log}");
    assert_eq!((head.height, head.settled_txs), (done.blocks_settled, 7));
    // Nothing left to prove: both workers' lease requests are held at the restarted sequencer
    // (a long poll), and `rollup status` counts them.
    let c = seq.clone();
    wait_for("both idle workers' lease requests held", 60, || {
        let mut c = c.clone();
        async move { (c.get_status(Empty {}).await.ok()?.into_inner().workers_waiting == 2).then_some(()) }
    })
    .await;

    // Metrics.
    let page = metrics_page(net.metrics_port).await;
    assert!(page.contains("rollup_jobs{state=\"done\"}") && page.contains("rollup_txs_settled_total 7"), "{page}");
    assert!(page.contains("rollup_signature_keys_total{source=\"kept\"}"), "{page}");
    assert!(page.contains("rollup_job_retries_total 0"), "{page}");
    assert!(
        page.contains("rollup_txs_open 0")
            && page.contains("rollup_batches_sealed_total{by=\"timeout\"}")
            && page.contains("# TYPE rollup_workers_waiting gauge")
            && page.contains("rollup_oldest_pending_job_seconds 0\n"),
        "nothing pending: {page}"
    );

    // The operator's `rollup jobs`, under the farm's token: settled blocks' jobs are history, so
    // nothing is in flight, and nothing settled can be queued again.
    let url = format!("http://127.0.0.1:{}", net.sequencer_port);
    let jobs_cmd = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rollup"))
            .args(["jobs", "--sequencer", &url])
            .args(args)
            .env_remove("ROLLUP_TOKEN")
            .output()
            .expect("run rollup jobs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = jobs_cmd(&["--json"]);
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    let (ok, out, err) = jobs_cmd(&["--json", "--token", TOKEN]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).expect("json")["jobs"], serde_json::json!([]), "{out}");
    let (ok, _, err) = jobs_cmd(&["retry", "0", "--token", TOKEN]);
    assert!(!ok && err.contains("NotFound") && err.contains("no job 0 in flight"), "{err}");
    let (ok, out, err) = jobs_cmd(&["retry", "--failed", "--token", TOKEN]);
    assert!(ok && out.contains("no job is given up"), "{out}{err}");

    // Settlement restarted: same head.
    kill(s);
    let _s = net.settlement("s", net.settlement_port);
    let mut set = SettlementClient::new(channel(net.settlement_port).await);
    let again = set.get_head(Empty {}).await.expect("head").into_inner();
    assert_eq!((again.height, again.state_root.clone()), (head.height, head.state_root.clone()));

    // Tampered blocks, offered to a fresh settlement node of the same network.
    let b1 = set.get_block(GetBlockRequest { height: 1 }).await.expect("block 1").into_inner();
    let b2 = set.get_block(GetBlockRequest { height: 2 }).await.expect("block 2").into_inner();
    let (fresh_port, fresh_metrics) = (free_port(), free_port());
    let _fresh = net.settlement_with_metrics("fresh", fresh_port, Some(fresh_metrics));
    let mut fresh = SettlementClient::with_interceptor(channel(fresh_port).await, |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().expect("ascii"));
        Ok(r)
    });
    let submit = |b: Block| SubmitBlockRequest { block: Some(b) };
    let mut changed_tx = b1.clone();
    let mut t = SignedTx::decode(&changed_tx.txs[0]).expect("tx");
    if let Tx::Transfer(tr) = &mut t.tx {
        tr.amount += 1;
    }
    changed_tx.txs[0] = t.encode();
    let mut changed_root = b1.clone();
    changed_root.new_root = b2.new_root.clone();
    let mut other_proof = b1.clone();
    other_proof.proof = b2.proof.clone();
    let mut bad_aggregate = b1.clone();
    bad_aggregate.aggregate_signature = SignedTx::decode(&b1.txs[0]).expect("tx").signature.to_bytes().to_vec();
    for (what, b) in [
        ("changed transaction", changed_tx),
        ("changed root", changed_root),
        ("another block's proof", other_proof),
        ("bad aggregate signature", bad_aggregate),
    ] {
        let e = fresh.submit_block(submit(b)).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    // Block 2 sent before block 1 (several blocks in flight): checked, held until block 1
    // settles, then settled on it.
    let early = {
        let (mut fresh, b2) = (fresh.clone(), b2.clone());
        tokio::spawn(async move { fresh.submit_block(SubmitBlockRequest { block: Some(b2) }).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = fresh.submit_block(submit(b1.clone())).await.expect("the real block").into_inner();
    assert!(!ok.already_settled);
    let two = early.await.expect("task").expect("block 2, once block 1 settled").into_inner();
    assert_eq!((two.height, two.already_settled), (2, false));
    let again = fresh.submit_block(submit(b1.clone())).await.expect("resubmitted").into_inner();
    assert!(again.already_settled, "a resubmitted block is acknowledged, not applied twice");
    let h = fresh.get_head(Empty {}).await.expect("head").into_inner();
    assert_eq!((h.height, &h.state_root), (2, &b2.new_root));
    assert_eq!(h.state_root, done.state_root);
    // The next height from another root, and a block further ahead than a node takes: refused
    // at once.
    let mut wrong = b1;
    wrong.height = 3;
    let e = fresh.submit_block(submit(wrong)).await.expect_err("does not extend the head");
    assert!(e.code() == Code::FailedPrecondition && e.message().contains("old root"), "{e:?}");
    let mut far = b2;
    far.height = 19;
    let e = fresh.submit_block(submit(far)).await.expect_err("too far ahead");
    assert!(e.code() == Code::FailedPrecondition && e.message().contains("ahead of the head"), "{e:?}");
    // Its metrics page counts all of that.
    let page = metrics_page(fresh_metrics).await;
    for line in [
        "rollup_settlement_height 2\n",
        "rollup_settlement_txs_total 7\n",
        "rollup_settlement_blocks_total{outcome=\"settled\"} 2\n",
        "rollup_settlement_blocks_total{outcome=\"already_settled\"} 1\n",
        "rollup_settlement_blocks_total{outcome=\"invalid\"} 4\n",
        "rollup_settlement_blocks_total{outcome=\"refused\"} 2\n",
    ] {
        assert!(page.contains(line), "{line:?} in {page}");
    }
    // All of it checked with the verifier keys read from the file.
    let log = std::fs::read_to_string(dir.join(format!("settlement-{fresh_port}.log"))).unwrap_or_default();
    assert!(log.contains("verifier keys read") && !log.contains("circuits built"), "{log}");

    // The sequencer's data directory opened with other circuits (another capacity): refused with
    // the reason, and left as it was for the right ones.
    kill(q);
    let mut other = net.sequencer_with(3, ["--capacity", "3", "--genesis-accounts", "8"], None);
    let exit = exited(&mut other, "the sequencer with other circuits to exit", 120).await;
    assert!(!exit.success());
    let log = std::fs::read_to_string(dir.join("sequencer-3.log")).unwrap_or_default();
    assert!(log.contains("made with other circuits"), "{log}");
    // And verifier keys for batches of another size: refused before the directory is opened.
    let mut other = net.sequencer_with(5, ["--capacity", "3", "--genesis-accounts", "8"], net.keys.as_deref());
    assert!(!exited(&mut other, "the sequencer with other keys to exit", 60).await.success());
    let log = std::fs::read_to_string(dir.join("sequencer-5.log")).unwrap_or_default();
    assert!(log.contains("are for batches of 4 slots, and --capacity is 3"), "{log}");
    let q = net.sequencer(4);
    let mut seq = SequencerClient::new(channel(net.sequencer_port).await);
    let reopened = status(&mut seq).await;
    assert_eq!((reopened.accepted_txs, reopened.state_root), (7, done.state_root));

    // Stopped as systemd or Kubernetes stops a service (SIGTERM): it shuts down and exits 0, and
    // so does the worker.
    for (mut p, name, log) in [(q, "sequencer", "sequencer-4.log"), (w2, "worker", "w2.log")] {
        let pid = p.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
        let exit = exited(&mut p, &format!("the {name} to stop on SIGTERM"), 60).await;
        let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        assert!(exit.success() && log.contains("shutting down"), "the {name}: {exit:?}, {log}");
    }

    std::fs::remove_dir_all(&dir).ok();
}

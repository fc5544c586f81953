//! The `rollup` binary's offline commands, run as a user would.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use ark_bn254::{Bn254, Fq, Fq2, G1Affine, G2Affine};
use ark_ec::pairing::Pairing;
use ark_ec::AffineRepr;
use ark_ff::PrimeField;

fn rollup(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rollup")).args(args).output().expect("run rollup")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn fq(b: &[u8]) -> Fq {
    Fq::from_be_bytes_mod_order(b)
}

/// Decodes EIP-196/197 points by hand, independently of the crate's decoder.
fn g1(b: &[u8]) -> G1Affine {
    G1Affine::new_unchecked(fq(&b[..32]), fq(&b[32..64]))
}

fn g2(b: &[u8]) -> G2Affine {
    G2Affine::new_unchecked(Fq2::new(fq(&b[32..64]), fq(&b[..32])), Fq2::new(fq(&b[96..]), fq(&b[64..96])))
}

#[test]
fn keygen_from_a_seed_and_sign_offline() {
    let dir = std::env::temp_dir().join(format!("rollup-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("devnet-3.key");
    let _ = std::fs::remove_file(&key);
    let out = rollup(&["keygen", "--out", key.to_str().expect("utf8"), "--seed", "devnet-3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = std::fs::metadata(&key).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is readable by its owner only");
    let pk = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(hex(pk.trim()), circuits::genesis::devnet_pubkey(3).to_vec(), "the seed gives devnet account 3's key");
    // A second keygen to the same path is refused rather than overwriting the key.
    assert!(!rollup(&["keygen", "--out", key.to_str().expect("utf8")]).status.success());

    for args in [
        vec!["transfer", "--from", "3", "--to", "4", "--token", "1", "--amount", "500", "--fee", "2", "--nonce", "0"],
        vec!["swap", "--account", "3", "--pool", "0", "--direction", "b-to-a", "--amount-in", "1000", "--nonce", "1"],
        vec!["register", "--account", "77"],
    ] {
        let mut full = vec!["sign", "--key", key.to_str().expect("utf8"), "--json"];
        full.extend(args.iter());
        let out = rollup(&full);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let field = |k: &str| hex(v[k].as_str().expect(k));
        let (sig, point, pk) = (g1(&field("signature")), g1(&field("message_point")), g2(&field("public_key")));
        assert!(sig.is_on_curve() && point.is_on_curve() && pk.is_on_curve());
        // The pairing equation any BN254 implementation checks: e(signature, g2) = e(message_point, public_key).
        assert_eq!(Bn254::pairing(sig, G2Affine::generator()), Bn254::pairing(point, pk), "{args:?}");
        let signed = circuits::bls::SignedTx::decode(&field("signed_tx")).expect("signed tx decodes");
        assert_eq!(signed.tx.encode(), field("tx"));
        assert_eq!(circuits::bls::tx_message(&signed.tx).to_vec(), field("message_hash"));
        if let circuits::Tx::Register(r) = &signed.tx {
            assert!(circuits::bls::register_key(r).is_ok(), "the register carries a valid proof of possession");
        }
    }
    // Out-of-range fields are refused, not signed.
    let out = rollup(&[
        "sign",
        "--key",
        key.to_str().expect("utf8"),
        "transfer",
        "--from",
        "3",
        "--to",
        "4",
        "--token",
        "5000",
        "--amount",
        "1",
        "--nonce",
        "0",
    ]);
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

/// `rollup bench --sequencer --json`: a real sequencer on loopback accepts a signed load from
/// concurrent clients (each acknowledgement after its log flush), and the report carries the
/// rate, the latencies and the two ceilings measured alone in the same run.
#[test]
fn bench_sequencer_reports_the_acceptance_rate_as_json() {
    let out = rollup(&[
        "bench",
        "--sequencer",
        "--txs",
        "400",
        "--clients",
        "32",
        "--accounts",
        "64",
        "--capacity",
        "16",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).expect("utf-8").trim()).expect("one JSON object on stdout");
    assert_eq!(r["mode"], "sequencer", "{r}");
    assert_eq!((r["txs"].as_u64(), r["clients"].as_u64(), r["accounts"].as_u64()), (Some(400), Some(32), Some(64)));
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is a number: {r}"));
    assert!(
        num("accepted_tps") > 0.0 && (num("accepted_tps") - 400.0 / num("seconds")).abs() < 1e-6 * num("accepted_tps")
    );
    assert!(num("signatures_alone_tps") > 0.0 && num("execution_alone_tps") > 0.0, "{r}");
    // 400 transactions from 64 senders: most key lookups find the key kept from an earlier batch.
    assert!((0.5..=1.0).contains(&num("key_cache_hit_rate")), "{r}");
    // Sealed at 16 a batch while they arrived: at least the 25 full ones.
    assert!(r["batches"].as_u64() >= Some(25), "{r}");
    // The coordinator alone: the 25 batch jobs, and a merge for each of the 7 blocks (six of four
    // batches and the last one's).
    assert_eq!(r["coordinator_lock_us"]["jobs"].as_u64(), Some(32), "{r}");
    assert!(num("coordinator_alone_tps") > 0.0 && num("core_alone_tps") > 0.0 && num("log_alone_tps") > 0.0, "{r}");
    // Then every block settled: the seven, all 400 transactions.
    let settle = &r["settle_ms"];
    assert_eq!(settle["blocks"].as_u64(), Some(7), "{r}");
    assert!((settle["txs_per_block"].as_f64().expect("a number") * 7.0 - 400.0).abs() < 1e-6, "{r}");
    assert!(num("settle_alone_tps") > 0.0, "{r}");
    let l = &r["latency_ms"];
    let ms = |k: &str| l[k].as_f64().unwrap_or_else(|| panic!("latency {k}: {r}"));
    assert!(0.0 < ms("p50") && ms("p50") <= ms("p95") && ms("p95") <= ms("p99") && ms("p99") <= ms("max"), "{r}");
    assert!(r["machine"]["cores"].as_u64() >= Some(1), "{r}");
    // Proving options mean nothing to it, and its own mean nothing without it: refused.
    for bad in [
        &["bench", "--sequencer", "--workers", "2"][..],
        &["bench", "--sequencer", "--backend", "cpu"],
        &["bench", "--clients", "4"],
    ] {
        let out = rollup(bad);
        assert!(!out.status.success(), "{bad:?} was taken");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot be used with")
                || String::from_utf8_lossy(&out.stderr).contains("required"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = rollup(&["bench", "--sequencer", "--txs", "0"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid value '0' for '--txs"));
}

/// `rollup bench --json` end to end on a small load: the whole proving path (batch proofs, the
/// aggregation tree, the block proof's verification) and the interleaved stock baseline, and the
/// report's fields as operators and the plots read them.
#[test]
fn bench_reports_throughput_stages_and_the_stock_baseline_as_json() {
    // One round of the baseline (three by default): stock plonky2's proofs are the slowest part.
    let out = rollup(&[
        "bench",
        "--backend",
        "cpu",
        "--txs",
        "8",
        "--capacity",
        "4",
        "--workers",
        "2",
        "--baseline-pairs",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let r: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object on stdout");
    assert_eq!(r["backend"], "cpu");
    assert_eq!((r["txs"].as_u64(), r["batches"].as_u64(), r["workers"].as_u64()), (Some(8), Some(2), Some(2)));
    // One backend: the CPU, whatever GPUs the machine has.
    assert_eq!(r["devices"], 1, "{r}");
    assert_eq!(r["machine"]["gpus"].as_u64(), Some(prover_gpu::cuda::device_count() as u64), "{r}");
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is a number: {r}"));
    let (proven, stock) = (num("proven_tps"), num("stock_plonky2_tps"));
    assert!(proven > 0.0 && stock > 0.0, "{r}");
    assert!((num("speedup_vs_stock") - proven / stock).abs() < 1e-9 * proven / stock);
    // The baseline is stock plonky2 doing the same work: two batch proofs and one merge.
    assert_eq!(r["merges"], 1, "{r}");
    let (stock_batch, stock_merge) = (num("stock_batch_proof_seconds"), num("stock_merge_proof_seconds"));
    assert!(stock_batch > 0.0 && stock_merge > 0.0, "{r}");
    assert!((8.0 / (2.0 * stock_batch + stock_merge) - stock).abs() < 1e-9 * stock, "stock path: {r}");
    assert!((8.0 / num("proving_seconds") - proven).abs() < 1e-9 * proven, "proven_tps is txs over proving time");
    // Two batches: their proofs, then one merge of the two batch proofs at level 1 (level 0 is
    // the batch proofs themselves, with no wrapping proof).
    let stages: Vec<(String, u64)> = r["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["name"].as_str().expect("name").to_string(), s["jobs"].as_u64().expect("jobs")))
        .collect();
    for (name, jobs) in [("warmup", 2), ("batch_proofs", 2), ("aggregation_level_1", 1), ("verification", 1)] {
        assert!(stages.contains(&(name.to_string(), jobs)), "{name} with {jobs} jobs in {stages:?}");
    }
    // The proving time spans the batch proofs and the aggregation, and leaves out the warm-up
    // (a batch proof and a merge of its own, before it): counted in, it would exceed the sum.
    let stage = |name: &str, key: &str| {
        r["stages"].as_array().expect("stages").iter().find(|s| s["name"] == name).expect(name)[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} of {name}"))
    };
    let seconds = |name: &str| stage(name, "seconds");
    let proving_stages = seconds("batch_proofs") + seconds("aggregation_level_1");
    assert!(
        num("proving_seconds") >= proving_stages && num("proving_seconds") < proving_stages + seconds("warmup"),
        "proving time {} against stages {proving_stages} and warm-up {}",
        num("proving_seconds"),
        seconds("warmup")
    );
    assert!(!stages.iter().any(|(n, _)| n == "aggregation_level_0"), "no jobs at level 0: {stages:?}");
    // Each stage's CPU time (all threads, from /proc): the batch proofs kept the cores busy, and no
    // stage used more than its seconds on every core (in ticks of 10 ms: a few ticks of slack).
    let cores = r["machine"]["cores"].as_f64().expect("cores");
    for s in r["stages"].as_array().expect("stages") {
        let cpu = s["cpu_seconds"].as_f64().unwrap_or_else(|| panic!("cpu_seconds of {s}"));
        let wall = s["seconds"].as_f64().expect("seconds");
        assert!(cpu >= 0.0 && cpu <= wall * cores + 0.03, "{s}");
    }
    assert!(stage("batch_proofs", "cpu_seconds") > 0.0, "{r}");
    assert_eq!(r["baseline_pairs"], 1);
    // One batch proof and one merge on our pipeline, step by step, against stock's of the same.
    for (proof, stock_seconds) in [("batch", stock_batch), ("merge", stock_merge)] {
        let steps = &r[format!("{proof}_proof_steps")];
        let step = |k: &str| steps[k].as_f64().unwrap_or_else(|| panic!("{proof} step {k}: {steps}"));
        let parts = [
            "witness",
            "wires_commit",
            "partial_products",
            "zs_commit",
            "quotient",
            "quotient_commit",
            "openings",
            "fri",
        ];
        let sum: f64 = parts.iter().map(|k| step(k)).sum();
        assert!((sum - step("total")).abs() < 1e-6 && step("total") > 0.0, "{steps}");
        let speedup = num(&format!("{proof}_speedup_vs_stock"));
        assert!((speedup - stock_seconds / step("total")).abs() < 1e-9 * speedup, "{proof}: {r}");
    }
    assert!(num("peak_memory_mib") > 0.0 && r["block_proof_bytes"].as_u64() > Some(0));
    assert!(r["machine"]["cores"].as_u64() >= Some(1) && r["machine"]["cpu"].is_string(), "{r}");
    // The rayon backend's Poseidon instruction set, as this CPU decides it.
    assert_eq!(r["machine"]["cpu_hash"], prover_gpu::lanes::isa().name(), "{r}");
    // No device was asked for, so none is reported.
    assert!(r["peak_device_memory_mib"].is_null() && r["device_memory_estimate_mib"].is_null(), "{r}");
    assert!(r["batch_proof_transfers_mib"].is_null(), "the CPU backend copies nothing to a device");
    assert!(r["cuda_streams"].is_null(), "{r}");

    // Bad options are refused before any work.
    let out = rollup(&["bench", "--txs", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value '0' for '--txs"));
    for bad in [&["--baseline-pairs", "0"][..], &["--sequencer", "--baseline-pairs", "2"]] {
        let out = rollup(&[&["bench", "--txs", "1"][..], bad].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--baseline-pairs"), "{bad:?}: {err}");
    }
    // A bad CUDA streams setting is named, before any work, whether or not `auto` finds a device.
    for bad in ["0", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_rollup"))
            .args(["bench", "--backend", "auto", "--txs", "1"])
            .env("ROLLUP_CUDA_STREAMS", bad)
            .output()
            .expect("run rollup");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("ROLLUP_CUDA_STREAMS") && err.contains("1 to 64"), "{err}");
    }
    // So is a bad setting of how the device's waits are made.
    let out = Command::new(env!("CARGO_BIN_EXE_rollup"))
        .args(["bench", "--backend", "auto", "--txs", "1"])
        .env("ROLLUP_CUDA_SYNC", "spin")
        .output()
        .expect("run rollup");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ROLLUP_CUDA_SYNC") && err.contains("`block`"), "{err}");
    // A device this machine lacks is named in the error, under `cuda` (no device at all) as under
    // `auto` with devices (a number past the last is never a fallback), before any work.
    let out = rollup(&["bench", "--backend", "cuda", "--device", "1000", "--txs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--backend cuda --device 1000"), "{err}");
    assert!(!err.contains("proving benchmark"), "{err}");
    // Every CUDA device, on the CPU backend, is a contradiction named before any work.
    let out = rollup(&["bench", "--backend", "cpu", "--all-devices", "--txs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--all-devices") && err.contains("--backend cpu"), "{err}");
}

/// The main job, as the README runs it, on a small load: settlement, the sequencer and two
/// workers in one process, every valid transaction settled, every invalid one refused for its
/// reason, and the settled root the sequencer's.
#[test]
fn devnet_settles_its_load_and_refuses_the_invalid_transactions() {
    let out = rollup(&["devnet", "--txs", "8", "--capacity", "4", "--json"]);
    assert!(out.status.success(), "devnet failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stdout).expect("utf-8").trim()).expect("one JSON object on stdout");
    assert_eq!(r["state_roots_match"], true, "{r}");
    assert_eq!(
        (r["txs_submitted"].as_u64(), r["txs_rejected"].as_u64(), r["txs_settled"].as_u64()),
        (Some(13), Some(5), Some(8))
    );
    // Two full batches of four, in one block or (a machine slow enough that the block's timer
    // ran out between them) two.
    assert_eq!((r["batches"].as_u64(), r["workers"].as_u64()), (Some(2), Some(2)), "{r}");
    assert!(matches!(r["blocks_settled"].as_u64(), Some(1 | 2)), "{r}");
    let rejections = r["rejections"].as_object().expect("rejections");
    for reason in ["signed by another key", "insufficient balance", "bad nonce", "unknown account", "malformed bytes"] {
        assert!(rejections.keys().any(|k| k.starts_with(reason)), "{reason} refused: {r}");
    }
    let num = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} is a number: {r}"));
    assert!(num("proving_tps") > 0.0 && num("e2e_tps") > 0.0 && num("job_queue_ms_mean") >= 0.0, "{r}");
    assert!(num("latency_p50_ms") <= num("latency_p95_ms"), "{r}");
}

/// `MemAvailable` of this machine, GiB.
fn available_gib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:")).expect("MemAvailable");
    line.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).expect("kB") >> 20
}

/// More proofs at once on the CPU than this machine's memory holds are refused before the
/// circuits are built, naming how many fit: without the check, the build and the first proofs
/// ran until the kernel killed the process. 64 proofs of the largest circuits need hundreds of
/// GiB (`node/src/memory.rs`).
#[test]
fn more_cpu_workers_than_the_memory_holds_are_refused_before_the_build() {
    if available_gib() > 512 {
        eprintln!("this machine has {} GiB available: 64 proofs of 2^19 rows fit", available_gib());
        return;
    }
    for cmd in ["bench", "devnet"] {
        let out = rollup(&[cmd, "--backend", "cpu", "--capacity", "2941", "--workers", "64", "--txs", "4"]);
        assert!(!out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("run at most --workers") || err.contains("use a smaller --capacity"), "{cmd}: {err}");
        assert!(err.contains("2941 slots (2^19 rows)") && err.contains("MiB available"), "{cmd}: {err}");
        assert!(!err.contains("circuits built"), "{cmd}: refused before the build: {err}");
    }
}

/// A worker given prover data it cannot use stops at once, saying which file and why, before
/// it reaches for the coordinator (none listens here): a missing file, another kind of file,
/// one cut short.
#[test]
fn a_worker_refuses_prover_data_it_cannot_use() {
    let dir = std::env::temp_dir().join(format!("rollup-cli-prover-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (garbage, cut) = (dir.join("garbage.bin"), dir.join("cut.bin"));
    std::fs::write(&garbage, b"rollup-vkeys-v1\nnot prover data").expect("write");
    std::fs::write(&cut, [&b"rollup-prover-1\n"[..], &[200, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]].concat()).expect("write");
    let missing = dir.join("missing.bin");
    for (path, why) in
        [(&missing, "opening the prover data"), (&garbage, "not a prover data file"), (&cut, "truncated")]
    {
        let path = path.to_str().expect("utf8");
        let args = ["prover", "--backend", "cpu", "--token", "t", "--coordinator", "http://127.0.0.1:1"];
        let out = rollup(&[&args[..], &["--prover-data", path]].concat());
        assert!(!out.status.success(), "{path}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why) && err.contains(path) && !err.contains("unreachable"), "{path}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

//! Subcommands of `rollup`.

use std::path::PathBuf;

use aggregator::{AggJob, AggregationCircuits, BlockVerifier, ProofBytes, ProofKind};
use anyhow::{Context, Result};
use circuits::bls::{encoding::g1_to_bytes, message_point, tx_message, SecretKey, SignedTx};
use circuits::{BatchCircuit, Direction, Executor, Genesis, Register, Swap, Transfer, Tx};
use clap::{Args, Parser, Subcommand, ValueEnum};
use prover_gpu::Prover;
use serde::Serialize;

use crate::keyfile::{self, to_hex};

/// The batch capacity the network uses: the most slots whose rows fit the aggregation shape,
/// 2^15 (a test keeps it so).
pub const DEFAULT_BATCH_CAPACITY: usize = 183;

/// Parses a count that must be at least 1 (`--block-batches`, `--mempool-limit`).
pub fn positive(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a count: {e}")),
    }
}

/// Parses `--capacity`: slots per batch, from 1 to the largest batch circuit's
/// [`circuits::MAX_BATCH_CAPACITY`], whose prover fits a 16 GiB GPU. Refused here, at once,
/// rather than by the circuit's build after minutes of laying out rows.
pub fn capacity(s: &str) -> std::result::Result<usize, String> {
    let n = s.trim().parse::<usize>().map_err(|e| format!("{s:?} is not a count: {e}"))?;
    circuits::check_capacity(n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// Parses a share of a load (`--swap-ratio`): a number from 0 to 1. A value outside, NaN
/// included, is refused rather than read as all or none.
pub fn share(s: &str) -> std::result::Result<f64, String> {
    let x: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{s} is not a share from 0 to 1"))
    }
}

/// A ZK rollup for transfers and swaps with a GPU prover farm.
#[derive(Debug, Parser)]
#[command(name = "rollup", version, about, args_override_self = true)]
pub struct Cli {
    /// A TOML file with defaults for any flag: a table per subcommand (`[sequencer]`,
    /// `[settlement]`, ...) whose keys are flag names; flags on the command line win.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the batch circuit and print its measured size.
    Circuits(CircuitsArgs),
    /// Make a BLS key file (mode 0600).
    Keygen(KeygenArgs),
    /// Sign a transaction offline.
    Sign(SignArgs),
    /// Run everything in one process on loopback with a synthetic load: the main demo.
    Devnet(crate::devnet::DevnetArgs),
    /// Run the settlement node.
    Settlement(crate::services::SettlementArgs),
    /// Run the sequencer with the prover-farm coordinator.
    Sequencer(crate::services::SequencerArgs),
    /// Run a prover worker.
    Prover(crate::services::ProverArgs),
    /// Send a transfer.
    Transfer(crate::client::TransferArgs),
    /// Send a swap.
    Swap(crate::client::SwapArgs),
    /// Read an account.
    Account(crate::client::AccountArgs),
    /// Read the settled head.
    Head(crate::client::HeadArgs),
    /// Read the sequencer's status.
    Status(crate::client::StatusArgs),
    /// List the prover farm's jobs in flight; `retry` queues given-up jobs again.
    Jobs(crate::jobs::JobsArgs),
    /// Measure how many transactions per second this machine proves.
    Bench(crate::bench::BenchArgs),
}

/// Options of `rollup keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key (refused if the file exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Derive the key from this seed instead of randomly (`devnet-<i>` is devnet account i).
    #[arg(long)]
    pub seed: Option<String>,
}

/// Options of `rollup sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The signer's key file.
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    tx: SignTx,
}

#[derive(Debug, Subcommand)]
enum SignTx {
    /// A transfer.
    Transfer {
        /// Sender account.
        #[arg(long)]
        from: u32,
        /// Receiver account.
        #[arg(long)]
        to: u32,
        /// Token id.
        #[arg(long)]
        token: u16,
        /// Amount.
        #[arg(long)]
        amount: u64,
        /// Fee in the fee token.
        #[arg(long, default_value_t = 0)]
        fee: u64,
        /// The sender's nonce.
        #[arg(long)]
        nonce: u32,
    },
    /// A swap.
    Swap {
        /// Trader account.
        #[arg(long)]
        account: u32,
        /// Pool id.
        #[arg(long)]
        pool: u32,
        /// Which token is paid in.
        #[arg(long, value_enum)]
        direction: DirectionArg,
        /// Amount paid in.
        #[arg(long)]
        amount_in: u64,
        /// Least acceptable output.
        #[arg(long, default_value_t = 1)]
        min_out: u64,
        /// Fee in the fee token.
        #[arg(long, default_value_t = 0)]
        fee: u64,
        /// The trader's nonce.
        #[arg(long)]
        nonce: u32,
    },
    /// Register the key file's key under a free account id (with its proof of possession).
    Register {
        /// The new account's id.
        #[arg(long)]
        account: u32,
    },
}

/// A swap's direction on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DirectionArg {
    /// Pay token a, receive token b.
    AToB,
    /// Pay token b, receive token a.
    BToA,
}

/// What `rollup sign --json` prints: every value hex, points in the EIP-196/197 encodings.
#[derive(Debug, Serialize)]
struct SignReport {
    signed_tx: String,
    tx: String,
    message_hash: String,
    message_point: String,
    signature: String,
    public_key: String,
}

/// Options of `rollup circuits`.
#[derive(Debug, Args, PartialEq, Eq)]
pub struct CircuitsArgs {
    /// Transaction slots per batch, from 1 to the largest batch circuit's 2 941 (2^19 rows).
    #[arg(long, default_value_t = DEFAULT_BATCH_CAPACITY, value_parser = crate::cli::capacity)]
    pub capacity: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the circuits' verifier keys to this file, for `rollup sequencer` and `rollup
    /// settlement --verifier-keys FILE` (they then start without building the circuits).
    #[arg(long)]
    pub verifier_keys_out: Option<PathBuf>,
    /// Write the circuits' prover data to this file, for `rollup prover --prover-data FILE`
    /// (workers then start without building the circuits). Hundreds of megabytes: 550 MiB at
    /// 2^15 rows, and about twice that for each size up.
    #[arg(long)]
    pub prover_data_out: Option<PathBuf>,
    /// Leave out the measured block proof (a batch proof and a merge on the CPU, for a block
    /// proof's size and a proof's host memory): for writing the files alone, where that proof
    /// takes about as long as the build.
    #[arg(long)]
    pub no_proof: bool,
}

/// `rollup circuits`'s host memory, MiB ([`crate::memory::Stages`], the proof's left out with
/// `--no-proof`).
#[derive(Debug, Serialize)]
struct CircuitsMemory {
    circuits_build_peak: f64,
    circuits_built: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    proving_peak: Option<f64>,
}

/// What `rollup circuits --json` prints.
#[derive(Debug, Serialize)]
struct CircuitsReport {
    batch_capacity: usize,
    degree_bits: usize,
    rows: usize,
    rows_per_slot: usize,
    rows_per_transfer: usize,
    rows_per_swap: usize,
    rows_per_register: usize,
    rows_fixed: usize,
    slot_layout: &'static str,
    /// 16 of the batch, then the 68 of the merge circuit's shape (zero in a batch proof).
    public_inputs: usize,
    /// The batch circuit's last build.
    build_seconds: f64,
    block_verifier_digest: String,
    /// Absent with `--no-proof`.
    #[serde(skip_serializing_if = "Option::is_none")]
    block_proof_bytes: Option<usize>,
    aggregation_degree_bits: usize,
    /// Children a merge verifies at most, and the rows its gates take of 2^aggregation_degree_bits.
    merge_arity: usize,
    merge_rows: usize,
    /// Every build of the batch and merge circuits until their shapes agreed.
    aggregation_build_seconds: f64,
    /// Builds of the two circuits before their shapes agreed: 1 unless the merge's gates were
    /// guessed wrong (docs/aggregation.md).
    aggregation_builds: usize,
    /// Device memory a CUDA prover needs for each proof in flight (`--workers`), the driver's
    /// slack included (`prover_gpu::cuda::footprint`).
    device_memory_per_proof_mib: f64,
    /// Device memory a CUDA prover keeps whatever its workers: both circuits' constants and
    /// sigmas, and the shape's tables.
    device_memory_resident_mib: f64,
    /// This process's host memory: building the circuits, then the block proof measured (a
    /// batch proof and a merge, one after the other, on the CPU).
    host_memory_mib: CircuitsMemory,
    /// Where `--verifier-keys-out` wrote the verifier keys, and their size.
    #[serde(skip_serializing_if = "Option::is_none")]
    verifier_keys_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verifier_keys_bytes: Option<usize>,
    /// Where `--prover-data-out` wrote the prover data, its size and the seconds writing took.
    #[serde(skip_serializing_if = "Option::is_none")]
    prover_data_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prover_data_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prover_data_write_seconds: Option<f64>,
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> Result<()> {
        let rt = || tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime");
        match self.command {
            Command::Circuits(args) => circuits_cmd(&args),
            Command::Keygen(args) => keygen_cmd(&args),
            Command::Sign(args) => sign_cmd(&args),
            Command::Devnet(a) => rt()?.block_on(crate::devnet::run(a)),
            Command::Settlement(a) => rt()?.block_on(crate::services::settlement(a)),
            Command::Sequencer(a) => rt()?.block_on(crate::services::sequencer(a)),
            Command::Prover(a) => rt()?.block_on(crate::services::prover(a)),
            Command::Transfer(a) => rt()?.block_on(crate::client::transfer(a)),
            Command::Swap(a) => rt()?.block_on(crate::client::swap(a)),
            Command::Account(a) => rt()?.block_on(crate::client::account(a)),
            Command::Head(a) => rt()?.block_on(crate::client::head(a)),
            Command::Status(a) => rt()?.block_on(crate::client::status(a)),
            Command::Jobs(a) => rt()?.block_on(crate::jobs::run(a)),
            Command::Bench(a) => crate::bench::run(a),
        }
    }
}

fn circuits_cmd(args: &CircuitsArgs) -> Result<()> {
    // The build, then (unless --no-proof) a block proved on the CPU to measure it.
    let work = crate::memory::Work { cpu_proofs: usize::from(!args.no_proof), ..Default::default() };
    crate::prover::check_host_memory(&Prover::cpu(), args.capacity, work)?;
    let (circuit, aggregation) = AggregationCircuits::build(args.capacity).context("building the circuits")?;
    let memory = crate::memory::Stages::after_build();
    let s = circuit.stats();
    let verifier = BlockVerifier::new(&aggregation);
    let verifier_keys_bytes = match &args.verifier_keys_out {
        Some(path) => Some(crate::network::write_keys(aggregation.keys(), path)?),
        None => None,
    };
    let (block_proof_bytes, proving_peak) = if args.no_proof {
        (None, None)
    } else {
        let bytes = measure_block_proof(&circuit, &aggregation)?;
        (Some(bytes), Some(memory.after_proving().proving_peak))
    };
    let memory = CircuitsMemory {
        circuits_build_peak: memory.circuits_build_peak,
        circuits_built: memory.circuits_built,
        proving_peak,
    };
    // After the measured proof, so that the file's encoding (one circuit's bytes at a time) is
    // not counted in its memory.
    let prover_data = match &args.prover_data_out {
        Some(path) => {
            let start = std::time::Instant::now();
            let bytes = crate::network::write_prover_data(&circuit, &aggregation, path)?;
            Some((bytes, start.elapsed().as_secs_f64()))
        }
        None => None,
    };
    let footprints =
        [&circuit.data().common, &aggregation.block_circuit().common].map(prover_gpu::cuda::footprint::Footprint::of);
    let resident = prover_gpu::cuda::footprint::resident(&footprints);
    let per_proof = prover_gpu::cuda::footprint::per_proof(&footprints);
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    // Every slot is universal: a transfer, a swap and a register each occupy one slot's rows.
    let report = CircuitsReport {
        batch_capacity: s.capacity,
        degree_bits: s.degree_bits,
        rows: s.rows,
        rows_per_slot: s.rows_per_slot,
        rows_per_transfer: s.rows_per_slot,
        rows_per_swap: s.rows_per_slot,
        rows_per_register: s.rows_per_slot,
        rows_fixed: s.rows_fixed,
        slot_layout: "universal",
        public_inputs: circuit.data().common.num_public_inputs,
        build_seconds: s.build_seconds,
        block_verifier_digest: verifier.digest_hex(),
        block_proof_bytes,
        aggregation_degree_bits: aggregation.block_circuit().common.degree_bits(),
        merge_arity: aggregator::MERGE_ARITY,
        merge_rows: aggregation.merge_rows(),
        aggregation_build_seconds: aggregation.build_seconds,
        aggregation_builds: aggregation.builds,
        device_memory_per_proof_mib: mib(per_proof),
        device_memory_resident_mib: mib(resident),
        host_memory_mib: memory,
        verifier_keys_file: args.verifier_keys_out.clone(),
        verifier_keys_bytes,
        prover_data_file: args.prover_data_out.clone(),
        prover_data_bytes: prover_data.map(|(bytes, _)| bytes),
        prover_data_write_seconds: prover_data.map(|(_, seconds)| seconds),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("batch circuit");
        println!("  slots per batch        {}", report.batch_capacity);
        println!("  rows (padded)          {} (2^{})", report.rows, report.degree_bits);
        println!("  rows per slot          {} (universal: transfer, swap and register alike)", report.rows_per_slot);
        println!("  fixed rows             {} (roots, operator fee credit)", report.rows_fixed);
        println!("  public inputs          {} (16, padded to the merge circuit's shape)", report.public_inputs);
        println!("  build time             {:.2} s", report.build_seconds);
        println!("block proofs");
        println!("  verifier key digest    {}", report.block_verifier_digest);
        if let Some(bytes) = report.block_proof_bytes {
            println!("  proof size             {bytes} bytes (any number of batches)");
        }
        println!("  recursion rows         2^{}", report.aggregation_degree_bits);
        println!(
            "  merge                  up to {} children, in {} of those rows",
            report.merge_arity, report.merge_rows
        );
        println!(
            "  build time             {:.2} s (with the batch circuit's; {} build{} of each)",
            report.aggregation_build_seconds,
            report.aggregation_builds,
            if report.aggregation_builds == 1 { "" } else { "s" }
        );
        println!("CUDA prover, device memory (estimated)");
        println!("  per proof in flight    {:.0} MiB (each of --workers)", report.device_memory_per_proof_mib);
        println!(
            "  resident               {:.0} MiB (both circuits' constants and sigmas, tables)",
            report.device_memory_resident_mib
        );
        let m = &report.host_memory_mib;
        println!("host memory (this process, measured)");
        println!(
            "  building the circuits  {:.0} MiB at the peak, {:.0} MiB once built",
            m.circuits_build_peak, m.circuits_built
        );
        if let Some(peak) = m.proving_peak {
            println!("  one proof on the CPU   {peak:.0} MiB at the peak, the circuits included");
        }
        if let (Some(path), Some(bytes)) = (&report.verifier_keys_file, report.verifier_keys_bytes) {
            println!("verifier keys");
            println!("  written to             {} ({bytes} bytes: --verifier-keys for the services)", path.display());
        }
        if let (Some(path), Some(bytes), Some(seconds)) =
            (&report.prover_data_file, report.prover_data_bytes, report.prover_data_write_seconds)
        {
            println!("prover data");
            println!(
                "  written to             {} ({:.0} MiB in {seconds:.1} s: --prover-data for the workers)",
                path.display(),
                bytes as f64 / f64::from(1 << 20)
            );
        }
    }
    Ok(())
}

fn keygen_cmd(args: &KeygenArgs) -> Result<()> {
    let sk = match &args.seed {
        Some(seed) => SecretKey::from_seed(seed.as_bytes()),
        None => SecretKey::random(&mut rand::rngs::OsRng),
    };
    keyfile::write(&args.out, &sk)?;
    println!("{}", to_hex(&sk.public_key().to_bytes()));
    Ok(())
}

fn sign_cmd(args: &SignArgs) -> Result<()> {
    let path = args.key.as_ref().context("--key FILE is required")?;
    let sk = keyfile::read(path)?;
    let tx = match args.tx {
        SignTx::Transfer { from, to, token, amount, fee, nonce } => {
            Tx::Transfer(Transfer { from, to, token, amount, fee, nonce })
        }
        SignTx::Swap { account, pool, direction, amount_in, min_out, fee, nonce } => {
            let direction = match direction {
                DirectionArg::AToB => Direction::AToB,
                DirectionArg::BToA => Direction::BToA,
            };
            Tx::Swap(Swap { account, pool, direction, amount_in, min_out, fee, nonce })
        }
        SignTx::Register { account } => Tx::Register(Register {
            account,
            pubkey: sk.public_key().to_bytes(),
            pop: sk.proof_of_possession().to_bytes(),
        }),
    };
    // Round-trip through the decoder so nothing out of range is ever signed.
    let tx = Tx::decode(&tx.encode()).context("transaction out of range")?;
    let signature = sk.sign_tx(&tx);
    let message = tx_message(&tx);
    let report = SignReport {
        signed_tx: to_hex(&SignedTx { tx: tx.clone(), signature }.encode()),
        tx: to_hex(&tx.encode()),
        message_hash: to_hex(&message),
        message_point: to_hex(&g1_to_bytes(&message_point(&message))),
        signature: to_hex(&signature.to_bytes()),
        public_key: to_hex(&sk.public_key().to_bytes()),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.signed_tx);
    }
    Ok(())
}

/// Size of a real block proof: an empty batch from the devnet genesis, merged alone.
fn measure_block_proof(circuit: &BatchCircuit, aggregation: &AggregationCircuits) -> Result<usize> {
    let mut ex = Executor::new(Genesis::devnet(1).build()?, circuit.capacity());
    let prover = Prover::cpu();
    let batch = circuit.prove(&prover, &ex.seal_batch()?)?;
    let batch = ProofBytes { kind: ProofKind::Batch, bytes: batch.to_bytes() };
    let block = aggregation.run(&prover, &AggJob::Merge { children: vec![batch] })?;
    Ok(block.bytes.len())
}

#[cfg(test)]
mod tests {
    use aggregator::AGGREGATION_DEGREE_BITS;

    use super::*;
    use crate::prover::{Backend, ProvingArgs};

    #[test]
    fn circuits_defaults() {
        let cli = Cli::try_parse_from(["rollup", "circuits"]).expect("parse");
        let Command::Circuits(args) = cli.command else { panic!("circuits") };
        assert_eq!(
            args,
            CircuitsArgs {
                capacity: DEFAULT_BATCH_CAPACITY,
                json: false,
                verifier_keys_out: None,
                prover_data_out: None,
                no_proof: false
            }
        );
        let cli = Cli::try_parse_from(["rollup", "sequencer", "--data-dir", "d"]).expect("parse");
        let Command::Sequencer(a) = cli.command else { panic!("sequencer") };
        assert_eq!((a.listen.as_str(), a.block_batches, a.max_attempts), ("127.0.0.1:50051", 6, 3));
        assert_eq!((a.network.capacity, a.network.verifier_keys), (DEFAULT_BATCH_CAPACITY, None));
        let cli = Cli::try_parse_from(["rollup", "devnet"]).expect("parse");
        let Command::Devnet(d) = cli.command else { panic!("devnet") };
        assert_eq!((d.txs, d.workers, d.json, d.block_batches), (200, 2, false, aggregator::MERGE_ARITY));
        let cli = Cli::try_parse_from(["rollup", "prover"]).expect("parse");
        let Command::Prover(p) = cli.command else { panic!("prover") };
        assert_eq!(
            (p.coordinator.as_str(), p.proving, p.name.as_str(), p.workers, p.prover_data),
            ("http://127.0.0.1:50051", ProvingArgs::default(), "prover", 1, None)
        );
        assert_eq!(ProvingArgs::default(), ProvingArgs { backend: Backend::Auto, device: 0 });
        let cli = Cli::try_parse_from(["rollup", "prover", "--workers", "4", "--prover-data", "p.bin"]).expect("parse");
        let Command::Prover(p) = cli.command else { panic!("prover") };
        assert_eq!((p.workers, p.prover_data), (4, Some(PathBuf::from("p.bin"))));
        for bad in ["0", "65", "-1", "many"] {
            assert!(Cli::try_parse_from(["rollup", "prover", "--workers", bad]).is_err(), "--workers {bad}");
        }
    }

    /// Flags whose nonsense values were once taken quietly (a share of swaps of 2 or NaN read as
    /// all or none; no workers, no batches a block, no attempts or no mempool read as one; a
    /// lease under 100 ms read as 100) are refused by the parser, on every command that takes
    /// them, and so from a config file too.
    #[test]
    fn out_of_range_flags_are_refused() {
        let parses = |args: &[&str]| Cli::try_parse_from(["rollup"].iter().chain(args)).is_ok();
        for cmd in ["bench", "devnet"] {
            for good in ["0", "0.25", "1"] {
                assert!(parses(&[cmd, "--swap-ratio", good]), "{cmd} --swap-ratio {good}");
            }
            for bad in ["1.5", "2", "NaN", "inf", "-0.5", "a third", ""] {
                assert!(!parses(&[cmd, "--swap-ratio", bad]), "{cmd} --swap-ratio {bad:?}");
            }
            assert!(parses(&[cmd, "--workers", "64"]), "{cmd} --workers 64");
            for bad in ["0", "65"] {
                assert!(!parses(&[cmd, "--workers", bad]), "{cmd} --workers {bad}");
            }
        }
        for cmd in [&["devnet"][..], &["sequencer", "--data-dir", "d"]] {
            assert!(parses(&[cmd, &["--block-batches", "12"]].concat()), "{cmd:?} --block-batches 12");
            assert!(!parses(&[cmd, &["--block-batches", "0"]].concat()), "{cmd:?} --block-batches 0");
        }
        let sequencer = |flag: &str, value: &str| parses(&["sequencer", "--data-dir", "d", flag, value]);
        for (flag, least) in [("--lease-ms", 100), ("--max-attempts", 1), ("--mempool-limit", 1)] {
            assert!(sequencer(flag, &least.to_string()), "{flag} {least}");
            assert!(!sequencer(flag, &(least - 1).to_string()), "{flag} {}", least - 1);
        }
        // A genesis larger than the account tree was an allocation of hundreds of gigabytes
        // that aborted the process.
        let most = crate::network::MAX_GENESIS_ACCOUNTS;
        for cmd in [&["sequencer", "--data-dir", "d"][..], &["settlement", "--data-dir", "d"]] {
            assert!(parses(&[cmd, &["--genesis-accounts", &most.to_string()]].concat()), "{cmd:?} {most}");
            for bad in [0, most + 1, 4_000_000_000] {
                assert!(!parses(&[cmd, &["--genesis-accounts", &bad.to_string()]].concat()), "{cmd:?} {bad}");
            }
        }
        for (args, least) in [(&["devnet"][..], 4), (&["bench", "--sequencer"], 2)] {
            assert!(parses(&[args, &["--accounts", &least.to_string()]].concat()), "{args:?} {least}");
            for bad in [least - 1, most + 1] {
                assert!(!parses(&[args, &["--accounts", &bad.to_string()]].concat()), "{args:?} {bad}");
            }
        }
        assert!(parses(&["bench", "--sequencer", "--clients", "1"]));
        // The sequencer's bench proves nothing, so it reads no circuits.
        assert!(parses(&["bench", "--prover-data", "p.bin"]));
        assert!(!parses(&["bench", "--sequencer", "--prover-data", "p.bin"]));
        for bad in ["0", "65537"] {
            assert!(!parses(&["bench", "--sequencer", "--clients", bad]), "--clients {bad}");
        }
        // A load past 2^20 transactions was, at 10^11, an allocation of 20 TB that aborted.
        let (most, past) = (crate::network::MAX_LOAD_TXS.to_string(), (crate::network::MAX_LOAD_TXS + 1).to_string());
        for args in [&["bench"][..], &["bench", "--sequencer"], &["devnet"]] {
            assert!(parses(&[args, &["--txs", &most]].concat()), "{args:?} --txs {most}");
            assert!(!parses(&[args, &["--txs", &past]].concat()), "{args:?} --txs {past}");
        }
        // A capacity past the largest batch circuit (2^19 rows) was laid out and built until the
        // machine's memory ran out: 16 384 slots were killed by the kernel after 2 min 48 s.
        let (most, past) = (circuits::MAX_BATCH_CAPACITY.to_string(), (circuits::MAX_BATCH_CAPACITY + 1).to_string());
        for args in [
            &["circuits"][..],
            &["devnet"],
            &["bench"],
            &["sequencer", "--data-dir", "d"],
            &["settlement", "--data-dir", "d"],
        ] {
            assert!(parses(&[args, &["--capacity", &most]].concat()), "{args:?} --capacity {most}");
            for bad in ["0", &past, "65536"] {
                assert!(!parses(&[args, &["--capacity", bad]].concat()), "{args:?} --capacity {bad}");
            }
        }
        assert!(capacity(&past).is_err_and(|e| e.contains("the largest batch circuit")), "past the largest");
        assert!(parses(&["devnet", "--txs", "0"]), "a devnet of the invalid transactions alone");
        assert!(!parses(&["bench", "--txs", "0"]) && !parses(&["bench", "--sequencer", "--txs", "0"]));
        assert_eq!((positive("1"), positive(" 7 ")), (Ok(1), Ok(7)));
        assert!(positive("0").is_err_and(|e| e.contains("at least 1")), "zero");
        assert!(positive("-3").is_err_and(|e| e.contains("not a count")), "negative");
        assert_eq!(share(" 0.3 "), Ok(0.3));
        assert!(share("1.0000001").is_err_and(|e| e.contains("from 0 to 1")), "past 1");
        assert!(share("x").is_err_and(|e| e.contains("not a number")), "not a number");
    }

    #[test]
    fn every_proving_command_takes_a_backend_and_a_device() {
        let cuda_3 = ProvingArgs { backend: Backend::Cuda, device: 3 };
        let flags = ["--backend", "cuda", "--device", "3"];
        let parse = |cmd: &str| Cli::try_parse_from(["rollup", cmd].into_iter().chain(flags)).expect(cmd).command;
        let Command::Prover(p) = parse("prover") else { panic!("prover") };
        assert_eq!(p.proving, cuda_3);
        let Command::Bench(b) = parse("bench") else { panic!("bench") };
        assert_eq!(b.proving, cuda_3);
        assert!(!b.all_devices);
        let all = Cli::try_parse_from(["rollup", "bench", "--all-devices", "--workers", "3"]).expect("all devices");
        let Command::Bench(b) = all.command else { panic!("bench") };
        assert!(b.all_devices && b.workers == 3);
        let Command::Devnet(d) = parse("devnet") else { panic!("devnet") };
        assert_eq!(d.proving, cuda_3);
        for bad in ["-1", "1024", "gpu0", ""] {
            assert!(Cli::try_parse_from(["rollup", "prover", "--device", bad]).is_err(), "--device {bad:?}");
        }
    }

    /// The batch circuit the node runs, full, proven twice through the CUDA backend's own code
    /// over its kernels built for the CPU (`prover_gpu::cuda::emulated`), then merged alone into a
    /// block proof: every proof verifies (the block proof with the settlement node's verifier),
    /// the second batch proof reuses the circuit's constants and sigmas left on the device by the
    /// first, every proof's own trees are released, every step meant for the device ran there,
    /// and at no allocation does the device hold more than the 16 GiB (the emulation
    /// refuses an allocation past it). The figures it prints are in BENCHMARKS.md
    /// (`cargo test --release -p node -- emulated --nocapture`).
    #[test]
    fn a_full_default_batch_and_its_merge_prove_on_the_emulated_cuda_backend_within_16_gib() {
        use prover_gpu::cuda::emulated::Activity;
        use prover_gpu::cuda::footprint::{self, Footprint};
        use prover_gpu::Backend;

        let built = crate::network::default_test_circuits();
        let (circuit, aggregation) = (&built.batch, &built.aggregation);
        let accounts = 64;
        let mut ex = Executor::new(Genesis::devnet(accounts).build().expect("genesis"), DEFAULT_BATCH_CAPACITY);
        let txs = circuits::load::mixed_load(DEFAULT_BATCH_CAPACITY, accounts, 0.3);
        for tx in &txs {
            ex.apply(tx).expect("the load applies");
        }
        let w = ex.seal_batch().expect("seal");
        let cuda = std::sync::Arc::new(prover_gpu::CudaBackend::emulated().expect("a C++ compiler"));
        let prover = Prover::Pipeline(cuda.clone());
        // Every step the backend moves to the device ran there, none fell back to the host: the
        // commitments from values, the quotient, the openings, FRI's combination, its proof of
        // work, and its queries from the kept trees.
        let all_on_device = |what: &str, activity: &Activity| {
            for step in [
                "gl_intt_finish",
                "psn_hash_rows",
                "psn_merkle_level",
                "qt_values",
                "gl_dot_chunks",
                "gl_combine",
                "fri_grind",
                "gl_gather_rows",
                "psn_gather_paths",
            ] {
                assert!(activity.kernels.iter().any(|k| k.name == step), "{what}: {step} did not run on the device");
            }
        };
        // Each proof's copies and work on the device.
        let (mut moved, mut work) = (Vec::new(), Vec::new());
        let mut prove_batch = || {
            let (before, activity) = (cuda.transfers().expect("counted"), cuda.device().activity());
            let proof = circuit.prove(&prover, &w).expect("the full batch proves");
            circuit.verify(&proof).expect("plonky2's verifier accepts it");
            moved.push(cuda.transfers().expect("counted").since(before));
            work.push(cuda.device().activity().since(&activity));
            assert_eq!(cuda.held_commitments(), 0, "the proof released its trees");
            proof
        };
        prove_batch();
        let batch = prove_batch();
        // The second proof's work on the device: launches by kernel, and copies.
        let activity = &work[1];
        println!(
            "the second proof: {} launches, {} uploads, {} downloads",
            activity.launches(),
            activity.uploads,
            activity.downloads
        );
        for k in &activity.kernels {
            println!("  {:<22} {:>5} launches {:>12} threads", k.name, k.launches, k.threads);
        }
        all_on_device("the batch proof", activity);
        let batch_peak = cuda.device().peak();
        // The batch merged alone into a block proof (the merge circuit's recursion gates), on the
        // device too, which the settlement node's verifier accepts.
        let batch = ProofBytes { kind: ProofKind::Batch, bytes: batch.to_bytes() };
        let before = cuda.device().activity();
        let block = aggregation.run(&prover, &AggJob::Merge { children: vec![batch] }).expect("the merge proves");
        all_on_device("the merge", &cuda.device().activity().since(&before));
        let expected = aggregator::BlockPublicInputs {
            old_root: w.old_root,
            new_root: w.new_root,
            commitment: circuits::tx::commitment(circuits::hash::ZERO_DIGEST, txs.iter()),
        };
        BlockVerifier::new(aggregation).verify(&block.bytes, &expected).expect("the block proof verifies");
        assert_eq!(cuda.held_commitments(), 0, "the merge released its trees");
        let peak = cuda.device().peak();
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!(
            "{DEFAULT_BATCH_CAPACITY} slots, 2^{}: peak device memory {:.1} MiB over the batch proofs, {:.1} MiB \
             with the merge; per batch proof to the device {:.1} MiB (first {:.1}), from it {:.1} MiB",
            circuit.stats().degree_bits,
            mib(batch_peak as u64),
            mib(peak as u64),
            mib(moved[1].to_device),
            mib(moved[0].to_device),
            mib(moved[1].from_device)
        );
        assert!(peak < prover_gpu::cuda::emulated::EMULATED_MEMORY);
        // The estimate a prover checks its device's free memory against before its first proof
        // (`Backend::check_memory`), the driver's slack left out, holds every allocation made:
        // the batch proofs', and the merge's beside the batch circuit's resident trees. The
        // second batch proof found its circuit's constants and sigmas resident, as every later
        // proof does, so the estimate is close to it; the merge was its circuit's first proof,
        // which uploads them only during its quotient, after its peak.
        let batch_only = [Footprint::of(&circuit.data().common)];
        let both = [batch_only[0], Footprint::of(&aggregation.block_circuit().common)];
        let model = |c: &[Footprint]| footprint::need(c, 1) - footprint::SLACK_PER_PROOF;
        let (est_batch, est_both) = (model(&batch_only), model(&both));
        println!(
            "estimated for one proof in flight, before the driver's slack: {:.1} MiB (batch), {:.1} MiB (batch and \
             merge)",
            mib(est_batch),
            mib(est_both)
        );
        let measured = batch_peak as u64;
        assert!(measured <= est_batch && est_batch <= measured + measured / 20, "{measured} allocated, {est_batch}");
        assert!(peak as u64 <= est_both, "{peak} allocated at once with the merge, {est_both} estimated");
        // The check `rollup prover` and `rollup bench` make before their first proof: one proof
        // fits the emulated device's 16 GiB, 64 do not, and the error names the most that do.
        crate::prover::check_device_memory(&prover, built, 1).expect("one proof fits in 16 GiB");
        crate::prover::check_device_memory(&Prover::Stock, built, 64).expect("the host has no device to fill");
        let e = crate::prover::check_device_memory(&prover, built, 64).expect_err("64 proofs of 0.8 GB");
        let fit = match e.downcast_ref::<prover_gpu::BackendError>() {
            Some(prover_gpu::BackendError::DeviceMemory { in_flight: 64, fit, .. }) => *fit,
            _ => panic!("not a device memory error: {e:#}"),
        };
        assert!((1..64).contains(&fit), "{fit} fit");
        assert!(format!("{e:#}").contains(&format!("run at most --workers {fit}")), "{e:#}");
        assert!(moved[1].to_device < moved[0].to_device, "the second proof reused the circuit's trees");
    }

    /// Padding is paid for: the default capacity must fill the aggregation shape's 2^15 rows
    /// without spilling to 2^16.
    #[test]
    fn default_capacity_fills_the_aggregation_degree() {
        // The circuit the node runs: padded to the merge circuit's shape.
        let built = crate::network::default_test_circuits();
        let (fits, aggregation) = (&built.batch, &built.aggregation);
        assert_eq!(fits.stats().degree_bits, AGGREGATION_DEGREE_BITS);
        assert_eq!(fits.data().common, aggregation.block_circuit().common);
        let spills = BatchCircuit::build_padded(DEFAULT_BATCH_CAPACITY + 1, aggregation.padding()).expect("build");
        assert_eq!(
            spills.stats().degree_bits,
            AGGREGATION_DEGREE_BITS + 1,
            "one more slot still fits: raise the default"
        );
    }
}

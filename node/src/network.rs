//! What every process of one network must agree on: the genesis and the circuits.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use aggregator::{AggregationCircuits, VerifierKeys};
use anyhow::{bail, Context, Result};
use circuits::{BatchCircuit, Genesis, F};
use plonky2::plonk::circuit_data::CommonCircuitData;
use tracing::info;

/// The circuits of a network, built once per process and shared by every service in it.
pub struct Circuits {
    /// The batch circuit.
    pub batch: BatchCircuit,
    /// The recursion circuits.
    pub aggregation: AggregationCircuits,
}

impl Circuits {
    /// Builds the circuits for batches of `capacity` slots.
    pub fn build(capacity: usize) -> Result<Arc<Self>> {
        crate::memory::check(capacity, crate::memory::Work::default()).context(
            "use a smaller --capacity or a machine with more memory (a sequencer or settlement node can start from \
             --verifier-keys, written by `rollup circuits --verifier-keys-out` on a larger machine)",
        )?;
        let start = std::time::Instant::now();
        let (batch, aggregation) = AggregationCircuits::build(capacity).context("building the circuits")?;
        let key = aggregation.keys().digest_hex();
        info!(capacity, seconds = start.elapsed().as_secs_f64(), %key, "circuits built");
        Ok(Arc::new(Self { batch, aggregation }))
    }

    /// Reads circuits from the prover data file `rollup circuits --prover-data-out` wrote, once
    /// `check_memory` passed for the capacity its header names (the read's peak is a little
    /// above a build's: `crate::memory::READ_PEAK`).
    pub fn read(path: &Path, check_memory: impl FnOnce(usize) -> Result<()>) -> Result<Arc<Self>> {
        let start = std::time::Instant::now();
        let file = std::fs::File::open(path).with_context(|| format!("opening the prover data {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        let mut input = std::io::BufReader::with_capacity(1 << 20, file);
        let header = aggregator::prover_data::Header::read(&mut input, len)
            .with_context(|| format!("the prover data {}", path.display()))?;
        let capacity = header.capacity;
        check_memory(capacity)?;
        let (batch, aggregation) =
            header.read_circuits(&mut input).with_context(|| format!("the prover data {}", path.display()))?;
        let key = aggregation.keys().digest_hex();
        info!(capacity, seconds = start.elapsed().as_secs_f64(), bytes = len, %key, "circuits read");
        Ok(Arc::new(Self { batch, aggregation }))
    }

    /// Their verifier keys, which is all the sequencer and the settlement node use.
    pub fn keys(&self) -> &Arc<VerifierKeys> {
        self.aggregation.keys()
    }

    /// Every circuit a prover proves: the batch circuit and the merge circuit.
    pub fn commons(&self) -> [&CommonCircuitData<F, 2>; 2] {
        [&self.batch.data().common, &self.aggregation.block_circuit().common]
    }
}

/// Key under which a node's database records the circuits it was made with.
const CIRCUITS_KEY: &[u8] = b"circuits";

/// Refuses a database made with other circuits, and records these in a new one (`fresh`: the
/// database holds nothing yet). A network's block verifier key is fixed when it starts
/// (DESIGN.md, decision 6): proofs and settled blocks made under another key, or batches cut
/// for another capacity, cannot continue here. The block verifier key's digest covers the
/// batch circuit too (the merge holds the batch key as a constant).
pub fn check_database(keys: &VerifierKeys, db: &sled::Db, fresh: bool) -> Result<()> {
    let ours = keys.digest_hex();
    match db.get(CIRCUITS_KEY)? {
        Some(v) if v.as_ref() == ours.as_bytes() => Ok(()),
        Some(v) => anyhow::bail!(
            "this data directory was made with other circuits (block verifier key {}); this \
             process's key is {ours} (another --capacity, or another version): use another --data-dir",
            String::from_utf8_lossy(&v)
        ),
        None if !fresh => anyhow::bail!(
            "this data directory was made by an earlier version, which did not record its circuits; \
             this process's block verifier key is {ours}: use another --data-dir"
        ),
        None => {
            db.insert(CIRCUITS_KEY, ours.as_bytes())?;
            db.flush()?;
            Ok(())
        }
    }
}

/// Reads the verifier keys `rollup circuits --verifier-keys-out` wrote, for batches of
/// `capacity` slots.
pub fn read_keys(path: &Path, capacity: usize) -> Result<VerifierKeys> {
    let file = std::fs::File::open(path).with_context(|| format!("opening the verifier keys {}", path.display()))?;
    let mut bytes = Vec::new();
    // One byte past the largest file, so that a larger one is refused as such, unread.
    file.take(aggregator::keys::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading the verifier keys {}", path.display()))?;
    let keys = VerifierKeys::from_bytes(&bytes).with_context(|| format!("the verifier keys {}", path.display()))?;
    anyhow::ensure!(
        keys.capacity() == capacity,
        "the verifier keys {} are for batches of {} slots, and --capacity is {capacity}",
        path.display(),
        keys.capacity()
    );
    Ok(keys)
}

/// Writes `keys` to `path` whole or not at all ([`write_whole`]); returns the file's size.
pub fn write_keys(keys: &VerifierKeys, path: &Path) -> Result<usize> {
    let bytes = keys.to_bytes()?;
    write_whole(path, |out| Ok(out.write_all(&bytes)?))?;
    Ok(bytes.len())
}

/// Writes the prover data of `batch` and `aggregation` to `path` whole or not at all
/// ([`write_whole`]), for `rollup prover --prover-data`; returns the file's size.
pub fn write_prover_data(batch: &BatchCircuit, aggregation: &AggregationCircuits, path: &Path) -> Result<u64> {
    let mut written = 0;
    write_whole(path, |out| {
        written = aggregator::prover_data::write(batch, aggregation, out)?;
        Ok(())
    })?;
    Ok(written)
}

/// Writes `path` whole or not at all: `write` fills a temporary file beside it, which is synced
/// and then renamed over it. A write that failed (a full disk: the prover data is hundreds of
/// megabytes) leaves no temporary file behind.
fn write_whole(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let whole = || -> Result<()> {
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        write(&mut out).with_context(|| format!("writing {}", tmp.display()))?;
        let file =
            out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    };
    whole().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The circuits for batches of 4 slots, built once for all the tests of this binary that need
/// them (each build takes seconds).
#[cfg(test)]
pub fn test_circuits() -> Arc<Circuits> {
    static CIRCUITS: std::sync::OnceLock<Arc<Circuits>> = std::sync::OnceLock::new();
    CIRCUITS.get_or_init(|| Circuits::build(4).expect("circuits")).clone()
}

/// The circuits for batches of the default capacity, built once for the tests of this binary
/// that need them (some 20 s on a 2-core Zen 1).
#[cfg(test)]
pub fn default_test_circuits() -> &'static Circuits {
    static CIRCUITS: std::sync::OnceLock<Circuits> = std::sync::OnceLock::new();
    CIRCUITS.get_or_init(|| {
        let (batch, aggregation) = AggregationCircuits::build(crate::cli::DEFAULT_BATCH_CAPACITY).expect("circuits");
        Circuits { batch, aggregation }
    })
}

/// The verifier keys of [`test_circuits`].
#[cfg(test)]
pub fn test_keys() -> Arc<VerifierKeys> {
    test_circuits().keys().clone()
}

/// The devnet genesis with `accounts` accounts.
pub fn genesis(accounts: u32) -> Genesis {
    Genesis::devnet(accounts)
}

/// The most accounts a genesis holds: the account tree's leaves, ids `0..2^ACCOUNT_DEPTH`. The
/// flags that size a genesis are bounded by it, so that a larger one is refused at once rather
/// than aborting the process on a genesis allocation of hundreds of gigabytes.
pub const MAX_GENESIS_ACCOUNTS: i64 = 1 << circuits::hash::ACCOUNT_DEPTH;

/// The most transactions a generated load holds (`--txs` of `rollup bench` and `rollup
/// devnet`). Each is signed before the clock starts and kept, with its batch's witness (a few
/// kilobytes a transaction: its Merkle paths), until the run ends: 2^20 is about 5 700 full
/// batches and a few gigabytes, hours of proving on a CPU and a long run for a machine of GPUs.
/// A larger count is refused at once rather than aborting the process on an allocation it
/// cannot make.
pub const MAX_LOAD_TXS: u64 = 1 << 20;

/// Refuses a devnet genesis of `accounts` accounts whose [`circuits::load::mixed_load`] of
/// `txs` transactions would register accounts past the account tree: the load registers one
/// account every 64 transactions, with the ids after the genesis's, and the executor would
/// refuse those.
pub fn check_load_fits(accounts: u32, txs: usize) -> Result<()> {
    let registrations = (txs / 64) as u64;
    let last = u64::from(accounts) + registrations;
    if last >= MAX_GENESIS_ACCOUNTS as u64 {
        bail!(
            "--accounts {accounts} with {txs} transactions: their {registrations} registrations need account ids up to {last}, and the account tree's ids end below {MAX_GENESIS_ACCOUNTS}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use prover_gpu::cuda::footprint::{need, Footprint};

    use super::*;

    /// Issue 6's bound on the largest batch circuit: its prover fits a 16 GiB GPU. The network's
    /// circuits (the batch padded to the merge's shape, and the merge) at `MAX_BATCH_DEGREE_BITS`,
    /// both resident with one proof in flight, fit; one degree more would not, so the bound is
    /// the largest that fits.
    #[test]
    fn the_largest_batch_circuits_prover_fits_a_16_gib_gpu() {
        let circuits = test_circuits();
        let at = |bits: usize| {
            circuits.commons().map(|common| {
                let mut common = common.clone();
                common.fri_params.degree_bits = bits;
                Footprint::of(&common)
            })
        };
        let (largest, past) = (circuits::MAX_BATCH_DEGREE_BITS, circuits::MAX_BATCH_DEGREE_BITS + 1);
        let gib = |bits| need(&at(bits), 1) as f64 / f64::from(1 << 30);
        assert!(gib(largest) <= 16.0, "2^{largest} rows need {:.2} GiB: lower the bound", gib(largest));
        assert!(gib(past) > 16.0, "2^{past} rows need {:.2} GiB: raise the bound", gib(past));
    }

    /// The load's last registration takes id `accounts + txs / 64`, which must be a leaf of the
    /// account tree.
    #[test]
    fn a_load_whose_registrations_pass_the_account_tree_is_refused() {
        let most = MAX_GENESIS_ACCOUNTS as u32;
        check_load_fits(most - 2, 64).expect("the last id, 2^24 - 1, is a leaf");
        check_load_fits(most - 1, 63).expect("no registration");
        let e = check_load_fits(most - 1, 64).expect_err("id 2^24 is past the tree");
        assert!(format!("{e}").contains("up to 16777216"), "{e}");
        check_load_fits(1024, 20_000).expect("the sequencer bench's defaults");
    }
}

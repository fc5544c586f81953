//! Blocks of 1 to 6 batches, merged one, two, three, four and six at a time, aggregate into
//! constant-size proofs that verify against the one block verifier key; wrong order, broken
//! chaining, changed inputs, foreign proofs, children that lie about their kind and merges of no
//! or too many children are refused.

use prover_gpu::{BackendError, Prover};
use std::sync::OnceLock;

use aggregator::*;
use circuits::hash::ZERO_DIGEST;
use circuits::tx::commitment;
use circuits::{BatchPublicInputs, Executor, Genesis, Transfer, Tx};
use proptest::prelude::*;

struct Fixture {
    /// The batch circuit `circuits` were read back with, for writing their file again.
    batch_circuit: circuits::BatchCircuit,
    circuits: AggregationCircuits,
    batch: Vec<ProofBytes>,
    pis: Vec<BatchPublicInputs>,
    txs: Vec<Vec<Tx>>,
    block2: ProofBytes,
}

/// Six chained batches of one or two transfers each, proven once, in the merge circuit's shape.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (built_batch, built) = AggregationCircuits::build(2).expect("circuits");
        // The batch circuit is padded to the merge's shape, and the first guess of the merge's
        // gates was right: one build of each.
        assert_eq!(built_batch.data().common, built.block_circuit().common);
        assert_eq!(built.builds, 1);
        // Every proof below is made by the circuits read back from their prover data file, as a
        // worker started with `--prover-data` makes them, and checked by plonky2's verifier.
        let (batch_circuit, circuits) = read_back(&built_batch, &built);
        assert_eq!(circuits.keys().to_bytes().expect("keys"), built.keys().to_bytes().expect("keys"));
        assert_eq!(circuits.padding().gates, built.padding().gates);
        assert_eq!(batch_circuit.stats().rows, built_batch.stats().rows);
        assert_eq!(circuits.merge_rows(), built.merge_rows());
        assert_eq!(circuits.builds, 0);
        drop((built_batch, built));
        // Every child's verifier fits the shared shape's rows, which stay the fewest.
        assert_eq!(circuits.block_circuit().common.degree_bits(), AGGREGATION_DEGREE_BITS);
        assert!(circuits.merge_rows() <= 1 << AGGREGATION_DEGREE_BITS);
        let mut ex = Executor::new(Genesis::devnet(4).build().expect("genesis"), 2);
        let (mut batch, mut pis, mut txs) = (Vec::new(), Vec::new(), Vec::new());
        let mut nonce = 0;
        for i in 0..6 {
            let mut these = Vec::new();
            for _ in 0..(1 + i % 2) {
                let tx = Tx::Transfer(Transfer { from: 1, to: 2, token: 1, amount: 10 + i as u64, fee: 1, nonce });
                nonce += 1;
                ex.apply(&tx).expect("valid");
                these.push(tx);
            }
            let w = ex.seal_batch().expect("seal");
            let proof = batch_circuit.prove(&Prover::cpu(), &w).expect("prove batch");
            pis.push(batch_circuit.verify(&proof).expect("verify batch"));
            batch.push(ProofBytes { kind: ProofKind::Batch, bytes: proof.to_bytes() });
            txs.push(these);
        }
        let block2 = circuits
            .run(&Prover::cpu(), &AggJob::Merge { children: vec![batch[0].clone(), batch[1].clone()] })
            .expect("merge of two");
        Fixture { batch_circuit, circuits, batch, pis, txs, block2 }
    })
}

/// The prover data file of `batch` and `circuits`, read back.
fn read_back(
    batch: &circuits::BatchCircuit,
    circuits: &AggregationCircuits,
) -> (circuits::BatchCircuit, AggregationCircuits) {
    let bytes = prover_data_file(batch, circuits);
    let start = std::time::Instant::now();
    let read = prover_data::read(&mut bytes.as_slice(), bytes.len() as u64).expect("reads back");
    eprintln!("prover data: {} bytes, read in {:.2} s", bytes.len(), start.elapsed().as_secs_f64());
    read
}

fn prover_data_file(batch: &circuits::BatchCircuit, circuits: &AggregationCircuits) -> Vec<u8> {
    let mut bytes = Vec::new();
    let n = prover_data::write(batch, circuits, &mut bytes).expect("writes");
    assert_eq!(n, bytes.len() as u64);
    bytes
}

fn expected(f: &Fixture, range: std::ops::Range<usize>) -> BlockPublicInputs {
    let txs: Vec<&Tx> = f.txs[range.clone()].iter().flatten().collect();
    BlockPublicInputs {
        old_root: f.pis[range.start].old_root,
        new_root: f.pis[range.end - 1].new_root,
        commitment: commitment(ZERO_DIGEST, txs),
    }
}

fn merge(f: &Fixture, children: &[&ProofBytes]) -> ProofBytes {
    let job = AggJob::Merge { children: children.iter().map(|&c| c.clone()).collect() };
    f.circuits.run(&Prover::cpu(), &job).expect("merge")
}

#[test]
fn blocks_of_1_to_6_batches_verify_with_one_key() {
    let f = fixture();
    let verifier = BlockVerifier::new(&f.circuits);
    let w = &f.batch;
    let block1 = merge(f, &[&w[0]]);
    // A merge of the most children there can be.
    assert_eq!(MERGE_ARITY, 6);
    let block6 = merge(f, &w.iter().collect::<Vec<_>>());
    // Merges among the children, first and in the middle (one of two batches from the chain's
    // middle): any kind in any position, and a tree of two levels.
    let block4 = merge(f, &[&block1, &merge(f, &[&w[1], &w[2]]), &w[3]]);
    let blocks = [(&block1, 0..1), (&f.block2, 0..2), (&block4, 0..4), (&block6, 0..6)];
    for (block, range) in blocks.clone() {
        verifier.verify(&block.bytes, &expected(f, range.clone())).unwrap_or_else(|e| panic!("{range:?}: {e}"));
    }
    let size = block1.bytes.len();
    assert!(blocks.iter().all(|(b, _)| b.bytes.len() == size), "block proofs have one size");
    // The block commitment does not depend on how the batches were grouped: `block4` groups its
    // four as 1, 2 and 1 under a merge of three, and has the public inputs of the batches in a
    // row; the plan's tree for 6 (one merge of all six) is `block6`'s.
    assert_eq!(BlockPlan::new(MERGE_ARITY).expect("plan").jobs.len(), MERGE_ARITY + 1);
}

#[test]
fn merges_of_no_children_or_too_many_are_refused() {
    let f = fixture();
    for n in [0, MERGE_ARITY + 1] {
        let job = AggJob::Merge { children: f.batch.iter().cycle().take(n).cloned().collect() };
        assert!(matches!(f.circuits.run(&Prover::cpu(), &job), Err(AggError::InvalidJob(_))), "{n} children");
        let proofs: Vec<_> = job_children(f, n);
        let refs: Vec<_> = proofs.iter().map(|p| (p, false)).collect();
        assert!(matches!(f.circuits.prove_merge(&Prover::cpu(), &refs), Err(AggError::InvalidJob(_))), "{n}");
    }
}

fn job_children(f: &Fixture, n: usize) -> Vec<circuits::circuit::Proof> {
    f.batch.iter().cycle().take(n).map(|p| f.circuits.check(p).expect("batch").0).collect()
}

#[test]
fn the_driver_runs_a_plan() {
    let f = fixture();
    let block = f.circuits.aggregate(&Prover::cpu(), &f.batch[2..5]).expect("aggregate 3");
    let mut e = expected(f, 2..5);
    // A block starting mid-chain: its commitment continues the chain instead of starting at zero.
    let got = f.circuits.check(&block).expect("valid merge proof").1;
    assert_eq!(got.old_root, e.old_root);
    assert_eq!(got.new_root, e.new_root);
    e.commitment = got.commitment_out;
    assert!(matches!(
        BlockVerifier::new(&f.circuits).verify(&block.bytes, &e),
        Err(AggError::PublicInputMismatch { field: "commitment_in", .. })
    ));
}

#[test]
fn swapped_order_and_broken_chaining_are_refused() {
    let f = fixture();
    let w = &f.batch;
    // Two out of order, a gap, and a gap behind two good links among four.
    for order in [vec![1, 0], vec![0, 2], vec![0, 1, 2, 4]] {
        let job = AggJob::Merge { children: order.iter().map(|&i| w[i].clone()).collect() };
        assert!(matches!(f.circuits.run(&Prover::cpu(), &job), Err(AggError::PublicInputMismatch { .. })), "{order:?}");
        // The circuit itself refuses too, without the native check.
        let proofs: Vec<_> = order.iter().map(|&i| f.circuits.check(&w[i]).expect("batch").0).collect();
        let refs: Vec<_> = proofs.iter().map(|p| (p, false)).collect();
        // As a failure of the job's witness, never of the device.
        match f.circuits.prove_merge(&Prover::cpu(), &refs) {
            Err(AggError::Backend { source }) => {
                assert!(
                    matches!(source, BackendError::Witness(_) | BackendError::Unsatisfied(_)),
                    "{order:?}: {source}"
                );
                assert!(!source.is_device_fault(), "{source}");
            }
            other => panic!("{order:?}: {:?}", other.map(|_| "a proof")),
        }
    }
}

#[test]
fn changed_public_inputs_are_refused() {
    let f = fixture();
    let v = BlockVerifier::new(&f.circuits);
    let good = expected(f, 0..2);
    for (field, e) in [
        ("old_root", BlockPublicInputs { old_root: f.pis[1].old_root, ..good }),
        ("new_root", BlockPublicInputs { new_root: f.pis[2].new_root, ..good }),
        ("commitment", BlockPublicInputs { commitment: ZERO_DIGEST, ..good }),
    ] {
        match v.verify(&f.block2.bytes, &e) {
            Err(AggError::PublicInputMismatch { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // A proof whose public input was edited to match the claim does not verify.
    let mut proof = f.circuits.check(&f.block2).expect("valid").0;
    proof.public_inputs[4] += circuits::F::ONE;
    let mut claim = good;
    claim.new_root.elements[0] += circuits::F::ONE;
    assert!(matches!(v.verify(&proof.to_bytes(), &claim), Err(AggError::InvalidProof(_))));
}

#[test]
fn proofs_of_other_circuits_are_refused() {
    let f = fixture();
    let v = BlockVerifier::new(&f.circuits);
    // A batch proof has the block proof's shape but not its key, nor the verifier data that a
    // merge proof carries.
    assert!(matches!(v.verify(&f.batch[0].bytes, &expected(f, 0..1)), Err(AggError::InvalidProof(_))));
    // Jobs check their children against the kind they claim.
    let as_merge = ProofBytes { kind: ProofKind::Merge, bytes: f.batch[0].bytes.clone() };
    let as_batch = ProofBytes { kind: ProofKind::Batch, bytes: f.block2.bytes.clone() };
    for bad in [as_merge, as_batch] {
        let job = AggJob::Merge { children: vec![bad] };
        assert!(matches!(f.circuits.run(&Prover::cpu(), &job), Err(AggError::InvalidProof(_))));
    }
}

#[test]
fn children_that_lie_about_their_kind_are_refused_by_the_circuit() {
    let f = fixture();
    let batch = f.circuits.check(&f.batch[0]).expect("batch").0;
    let merge = f.circuits.check(&f.block2).expect("merge").0;
    let third = f.circuits.check(&f.batch[2]).expect("batch").0;
    // A batch proof as a merge child (it does not carry the merge's verifier data), a merge proof
    // as a batch child (it is not a proof of the batch circuit), alone and behind a good child
    // that it chains onto.
    let cases: [&[(&circuits::circuit::Proof, bool)]; 3] =
        [&[(&batch, true)], &[(&merge, false)], &[(&merge, true), (&third, true)]];
    for (i, children) in cases.into_iter().enumerate() {
        match f.circuits.prove_merge(&Prover::cpu(), children) {
            Err(AggError::Backend { source }) => {
                assert!(matches!(source, BackendError::Witness(_) | BackendError::Unsatisfied(_)), "case {i}: {source}")
            }
            other => panic!("case {i}: {:?}", other.map(|_| "a proof")),
        }
    }
}

#[test]
fn a_merge_child_must_carry_the_merge_circuits_own_verifier_data() {
    let f = fixture();
    let batch = f.circuits.check(&f.batch[0]).expect("batch").0;
    // A merge of batch children never uses the verifier data it carries, so one carrying another
    // circuit's is a valid proof of the merge circuit; only the block verifier's check of that
    // data, or a merge above it, can tell.
    let mut foreign = f.circuits.block_circuit().verifier_only.clone();
    foreign.circuit_digest.elements[0] += circuits::F::ONE;
    let carrying = f.circuits.prove_merge_carrying(&Prover::cpu(), &[(&batch, false)], &foreign).expect("proves");
    f.circuits.block_circuit().verify(carrying.clone()).expect("a proof of the merge circuit");
    let bytes = ProofBytes { kind: ProofKind::Merge, bytes: carrying.to_bytes() };
    assert!(matches!(f.circuits.check(&bytes), Err(AggError::InvalidProof(_))));
    match f.circuits.prove_merge(&Prover::cpu(), &[(&carrying, true)]) {
        Err(AggError::Backend { source }) => {
            assert!(matches!(source, BackendError::Witness(_) | BackendError::Unsatisfied(_)), "{source}")
        }
        other => panic!("{:?}", other.map(|_| "a proof")),
    }
}

use plonky2::field::types::Field;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_and_mutated_bytes_never_panic(
        random in prop::collection::vec(any::<u8>(), 0..4096),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let f = fixture();
        let v = BlockVerifier::new(&f.circuits);
        let e = expected(f, 0..2);
        prop_assert!(matches!(v.verify(&random, &e), Err(AggError::MalformedProof(_))));
        let mut mutated = f.block2.bytes.clone();
        let i = pos.index(mutated.len());
        mutated[i] ^= xor;
        prop_assert!(v.verify(&mutated, &e).is_err());
        let truncated = &f.block2.bytes[..cut.index(f.block2.bytes.len())];
        prop_assert!(matches!(v.verify(truncated, &e), Err(AggError::MalformedProof(_))));
    }
}

/// A key file with its checksum made anew, so that the checks behind it are what refuse it.
fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    use sha2::Digest as _;
    bytes.truncate(bytes.len() - 32);
    let sum = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

#[test]
fn verifier_keys_read_back_from_their_file_check_what_the_circuits_check() {
    let f = fixture();
    let bytes = f.circuits.keys().to_bytes().expect("encodes");
    // A few kilobytes, against the circuits' prover data.
    assert!(bytes.len() < 64 << 10, "{} bytes", bytes.len());
    let keys = VerifierKeys::from_bytes(&bytes).expect("reads back");
    assert_eq!(keys.capacity(), 2);
    assert_eq!(keys.digest_hex(), BlockVerifier::new(&f.circuits).digest_hex());
    assert_eq!(keys.batch_digest(), f.circuits.keys().batch_digest());
    assert_eq!(keys.to_bytes().expect("encodes"), bytes);
    // Every proof the circuits accept, the keys accept, with the same public inputs; and what
    // they refuse, the keys refuse.
    for p in f.batch.iter().chain([&f.block2]) {
        assert_eq!(keys.check(p).expect("valid").1, f.circuits.check(p).expect("valid").1);
        let other = ProofBytes {
            kind: if p.kind == ProofKind::Batch { ProofKind::Merge } else { ProofKind::Batch },
            bytes: p.bytes.clone(),
        };
        assert!(matches!(keys.check(&other), Err(AggError::InvalidProof(_))));
    }
    keys.block().verify(&f.block2.bytes, &expected(f, 0..2)).expect("the block proof");
    assert!(matches!(
        keys.check(&ProofBytes { kind: ProofKind::Batch, bytes: vec![1, 2, 3] }),
        Err(AggError::MalformedProof(_))
    ));
}

#[test]
fn damaged_or_foreign_key_files_are_refused() {
    let f = fixture();
    let bytes = f.circuits.keys().to_bytes().expect("encodes");
    let refused = |b: &[u8], why: &str| match VerifierKeys::from_bytes(b) {
        Err(AggError::VerifierKeys(m)) => assert!(m.contains(why), "{why}: {m}"),
        other => panic!("{why}: {:?}", other.map(|k| k.digest_hex())),
    };
    // Any byte changed, anywhere: the checksum (every 7th position, and the last 40).
    for i in (0..bytes.len()).step_by(7).chain(bytes.len() - 40..bytes.len()) {
        let mut b = bytes.clone();
        b[i] ^= 0x20;
        if i < 16 {
            refused(&b, "not a verifier key file");
        } else {
            refused(&b, "checksum");
        }
    }
    for cut in [0, 10, 16, 47, 48, bytes.len() / 2, bytes.len() - 1] {
        assert!(VerifierKeys::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let payload = &bytes[..bytes.len() - 32];
    refused(&resealed([payload, &[0; 4], &[0; 32]].concat()), "bytes after");
    refused(&vec![0; (MAX_FILE_BYTES + 1) as usize], "larger than");
    // Checksummed, but wrong inside: no slots; a digest that is not the commitment's; a
    // length past the end.
    let mut no_slots = bytes.clone();
    no_slots[16..20].copy_from_slice(&0u32.to_le_bytes());
    refused(&resealed(no_slots), "no slots");
    let batch_len = u32::from_le_bytes(bytes[20..24].try_into().expect("four bytes")) as usize;
    let mut digest = bytes.clone();
    // The batch key's digest: its last 32 bytes before the common data follow the cap, so
    // find it by value.
    let d = f.circuits.keys().batch_digest();
    let d_bytes: Vec<u8> = d.elements.iter().flat_map(|e| e.0.to_le_bytes()).collect();
    let at = digest[24..24 + batch_len].windows(32).position(|w| w == d_bytes).expect("the digest's bytes") + 24;
    digest[at] ^= 1;
    refused(&resealed(digest), "is not its commitment's");
    let mut long = bytes.clone();
    long[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    refused(&resealed(long), "truncated in the batch");
}

use aggregator::keys::MAX_FILE_BYTES;

/// The bytes of several slices, one after the other.
struct Pieces<'a>(Vec<&'a [u8]>);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(first) = self.0.first_mut() {
            if first.is_empty() {
                self.0.remove(0);
                continue;
            }
            let n = first.len().min(buf.len());
            buf[..n].copy_from_slice(&first[..n]);
            *first = &first[n..];
            return Ok(n);
        }
        Ok(0)
    }
}

#[test]
fn damaged_or_foreign_prover_data_files_are_refused() {
    use sha2::Digest as _;
    let f = fixture();
    let bytes = prover_data_file(&f.batch_circuit, &f.circuits);
    // Read from pieces, so that each damaged file costs no copy of the whole.
    let read = |pieces: &[&[u8]]| {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        prover_data::read(&mut Pieces(pieces.to_vec()), len)
    };
    let refused = |pieces: &[&[u8]], why: &str| match read(pieces) {
        Err(AggError::ProverData(m)) => assert!(m.contains(why), "{why}: {m}"),
        Err(e) => panic!("{why}: {e}"),
        Ok(_) => panic!("{why}: read"),
    };
    let header_len = u64::from_le_bytes(bytes[16..24].try_into().expect("eight bytes")) as usize;
    let batch_at = 16 + 8 + header_len + 32;
    let batch_len = u64::from_le_bytes(bytes[batch_at..batch_at + 8].try_into().expect("eight bytes")) as usize;
    let merge_at = batch_at + 8 + batch_len + 32;
    // A byte changed in each section (and in each one's checksum): its checksum refuses it.
    for (at, which) in [
        (24, "header"),
        (batch_at + 8 + 1000, "batch circuit"),
        (merge_at - 1, "batch circuit"),
        (merge_at + 8 + 12345, "merge circuit"),
        (bytes.len() - 1, "merge circuit"),
    ] {
        let flipped = [bytes[at] ^ 0x10];
        refused(&[&bytes[..at], &flipped, &bytes[at + 1..]], &format!("the {which}: damaged"));
    }
    refused(&[b"rollup-vkeys-v1\n", &bytes[16..]], "not a prover data file");
    refused(&[&bytes[..10]], "shorter than its first bytes");
    for cut in [20, batch_at + 100, merge_at, bytes.len() - 1] {
        refused(&[&bytes[..cut]], "truncated");
    }
    refused(&[&bytes, &[0]], "bytes after the merge circuit");
    // A length past the end, and a header of another version, checksummed.
    let mut long = bytes[..batch_at + 8].to_vec();
    long[batch_at..].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(&[&long, &bytes[batch_at + 8..]], "a length past any file");
    let header = &bytes[24..24 + header_len];
    let version_len = u32::from_le_bytes(header[..4].try_into().expect("four bytes")) as usize;
    let other = [&(5u32).to_le_bytes()[..], b"0.0.0", &header[4 + version_len..]].concat();
    let section = [&(other.len() as u64).to_le_bytes()[..], &other, &sha2::Sha256::digest(&other)[..]].concat();
    refused(&[&bytes[..16], &section, &bytes[batch_at..]], "written by version 0.0.0 of rollup");
    // Both sections sound, but each circuit's in the other's place.
    refused(&[&bytes[..batch_at], &bytes[merge_at..], &bytes[batch_at..merge_at]], "not of its layout");
}

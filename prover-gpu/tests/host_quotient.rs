//! The CUDA quotient code (`cuda/quotient.cuh`), compiled by the host C compiler, against
//! plonky2's own gates: inside whole proofs, every quotient value at every point of the coset
//! must equal the rayon backend's, and plonky2's verifier must accept the proof. Runs on every
//! machine, GPU or not; the device runs the same C in `qt_values`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use plonky2::field::types::Field;
use plonky2::hash::hash_types::HashOutTarget;
use plonky2::hash::merkle_proofs::MerkleProofTarget;
use plonky2::hash::poseidon::PoseidonHash;
use plonky2::iop::target::{BoolTarget, Target};
use plonky2::iop::witness::{PartialWitness, WitnessWrite};
use plonky2::plonk::circuit_builder::CircuitBuilder;
use plonky2::plonk::circuit_data::{CircuitConfig, CircuitData};
use prover_gpu::gates::RangeCheckGate;
use prover_gpu::lanes::Isa;
use prover_gpu::quotient::{CpuGates, Selectors};
use prover_gpu::*;

mod common;
#[macro_use]
mod rayon_kernels;

use common::{hashed_inputs, verifier_of, witness, D};

/// Reads the packed arguments from a file, runs `qt_values_host`, writes the values.
const HARNESS_MAIN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static void *read_n(FILE *f, size_t n, size_t width) {
    void *p = malloc(n * width + 8);
    if (!p || fread(p, width, n, f) != n) { fprintf(stderr, "short input\n"); exit(2); }
    return p;
}
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    u64 len[10];
    if (fread(len, 8, 10, f) != 10) return 2;
    u32 *shape = read_n(f, len[0], 4), *gates = read_n(f, len[1], 4);
    u64 *params = read_n(f, len[2], 8), *cs = read_n(f, len[3], 8), *wires = read_n(f, len[4], 8);
    u64 *zs = read_n(f, len[5], 8), *xs = read_n(f, len[6], 8), *l0s = read_n(f, len[7], 8);
    u64 *zh_inv = read_n(f, len[8], 8);
    u64 size = len[9];
    fclose(f);
    u64 *out = calloc(shape[QT_CHALLENGES] * size, 8);
    qt_values_host(shape, gates, params, cs, wires, zs, xs, l0s, zh_inv, size, out);
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(out, 8, shape[QT_CHALLENGES] * size, o) != shape[QT_CHALLENGES] * size) return 2;
    fclose(o);
    return 0;
}
"#;

fn harness() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("prover-gpu-quotient-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let c = dir.join("quotient.c");
        let exe = dir.join("quotient");
        std::fs::write(&c, format!("{}\n{HARNESS_MAIN}", cuda::quotient_source(false))).expect("write");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = Command::new(&cc)
            .args(["-O2", "-std=c11", "-Wall", "-Wno-unused-function", "-Werror", "-o"])
            .arg(&exe)
            .arg(&c)
            .output()
            .expect("a host C compiler (cc)");
        assert!(built.status.success(), "quotient.cuh on the host:\n{}", String::from_utf8_lossy(&built.stderr));
        exe
    })
}

/// The rayon backend with its quotient values from another function.
struct QuotientBy(fn(&QuotientInputs<'_>) -> Result<Vec<F>>);

impl Backend for QuotientBy {
    fn name(&self) -> &'static str {
        "rayon with another quotient"
    }
    rayon_kernels!();
    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        (self.0)(q)
    }
}

/// The quotient values from the host-compiled C.
fn host_c(q: &QuotientInputs<'_>) -> Result<Vec<F>> {
    let a = q.kernel_args()?;
    let words = QuotientKernelArgs::words;
    // The leaves as the CUDA backend holds them on the device: row after row.
    let [cs, wires, zs] = q.trees().map(|(c, _)| words(&c.merkle_tree.leaves.concat()));
    assert_eq!([cs.len(), wires.len(), zs.len()], a.leaf_elements());
    let arrays = [words(&a.params), cs, wires, zs, words(&a.points.xs), words(&a.points.l0s), words(&a.zh_inv)];
    let mut bytes = Vec::new();
    let lens = [a.shape.len(), a.gates.len()].into_iter().chain(arrays.iter().map(Vec::len)).chain([a.size]);
    lens.for_each(|l| bytes.extend((l as u64).to_le_bytes()));
    a.shape.iter().chain(&a.gates).for_each(|w| bytes.extend(w.to_le_bytes()));
    arrays.iter().flatten().for_each(|w| bytes.extend(w.to_le_bytes()));
    let dir = harness().parent().expect("dir");
    let tag = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_alphanumeric(), "");
    let (input, output) = (dir.join(format!("in-{tag}.bin")), dir.join(format!("out-{tag}.bin")));
    std::fs::write(&input, bytes).expect("write inputs");
    let run = Command::new(harness()).arg(&input).arg(&output).output().expect("run");
    assert!(run.status.success(), "harness failed: {}", String::from_utf8_lossy(&run.stderr));
    let out = std::fs::read(&output).expect("read values");
    Ok(out.chunks(8).map(|c| F::from_canonical_u64(u64::from_le_bytes(c.try_into().expect("8 bytes")))).collect())
}

/// A circuit of exactly the batch circuit's gates: Poseidon, arithmetic, base-sum and our
/// range checks, constants and public inputs, in two selector groups; and an exponentiation,
/// which the batch circuit carries from 2^18 rows (the merge circuit's verifier takes it there).
fn batch_like_circuit(hashes: usize) -> (CircuitData<F, Config, D>, Vec<Target>) {
    let (mut b, inputs) = hashed_inputs(hashes);
    // A random base to a random 64-bit exponent (the gate's other two bits zero).
    let power = b.exp(inputs[0], inputs[1], 64);
    b.register_public_input(power);
    // A Merkle path, whose Poseidon rows swap or not by the index bits: the swap wire takes
    // both values.
    let siblings: Vec<HashOutTarget> = (0..12).map(|_| b.add_virtual_hash()).collect();
    let bits: Vec<BoolTarget> = (0..12).map(|i| b.constant_bool(i % 3 == 0)).collect();
    let root = b.add_virtual_hash();
    b.verify_merkle_proof::<PoseidonHash>(
        inputs.clone(),
        &bits,
        root,
        &MerkleProofTarget { siblings: siblings.clone() },
    );
    b.register_public_inputs(&root.elements);
    let prod = b.mul(inputs[0], inputs[1]);
    let sum = b.add(prod, inputs[2]);
    let c = b.constant(F::from_canonical_u64(12345));
    let x = b.mul_add(sum, c, inputs[3]);
    b.register_public_input(x);
    for k in 0..20u64 {
        let v = b.constant(F::from_canonical_u64(1000 + 77 * k));
        b.range_check(v, 16 + k as usize % 17);
    }
    // Our range-check gate at even and odd widths, its rows full and part full.
    for k in 0..24u64 {
        let (bits, ops) = [(1, 3), (14, 16), (16, 7), (31, 7), (32, 5), (36, 4)][k as usize % 6];
        let v = b.constant(F::from_canonical_u64(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(k + 1) >> (64 - bits)));
        prover_gpu::gates::range_check(&mut b, v, RangeCheckGate::new(bits, ops));
    }
    let mut free = inputs;
    free.extend(siblings.iter().flat_map(|s| s.elements));
    (b.build::<Config>(), free)
}

#[test]
fn host_compiled_quotient_equals_plonky2_gates_in_whole_proofs() {
    for (hashes, seed) in [(40, 1), (300, 2)] {
        let (data, targets) = batch_like_circuit(hashes);
        let common = &data.common;
        let program = GateProgram::of(common, &Selectors::of(common).expect("selectors")).expect("every gate is known");
        assert!(format!("{:?}", program.gates).contains("RangeCheck(31, 7)"), "the circuit has our range checks");
        assert!(format!("{:?}", program.gates).contains("Exponentiation(66)"), "the circuit has an exponentiation");
        assert!(program.gates.iter().any(|g| g.group.len() > 1), "a selector group shared by several gates");
        assert!(common.selectors_info.num_selectors() > 1, "more than one selector");
        let dual = DualBackend { first: RayonBackend, second: QuotientBy(host_c) };
        let proof = prove(&dual, &data.prover_only, common, witness(&targets, seed)).expect("dual proof");
        data.verify(proof).expect("plonky2 verifies it");
    }
}

/// A circuit that verifies a proof of `batch_like_circuit` (the recursion gates: Poseidon MDS,
/// reducing, extension arithmetic, random access, coset interpolation), plus a random access of
/// its own with extra constants.
fn recursive_circuit() -> (CircuitData<F, Config, D>, PartialWitness<F>) {
    let (inner, targets) = batch_like_circuit(20);
    verifier_of(&inner, witness(&targets, 3), |b| {
        let table: Vec<Target> = (0..8).map(|k| b.constant(F::from_canonical_u64(3 + 5 * k))).collect();
        let idx = b.constant(F::from_canonical_u64(5));
        let picked = b.random_access(idx, table);
        b.register_public_input(picked);
    })
}

#[test]
fn host_compiled_quotient_equals_plonky2_gates_in_a_recursive_verifier() {
    let (data, pw) = recursive_circuit();
    let common = &data.common;
    let program = GateProgram::of(common, &Selectors::of(common).expect("selectors")).expect("every gate is known");
    for wanted in [
        "CosetInterpolation",
        "RandomAccess",
        "ReducingExtension",
        "Reducing(",
        "PoseidonMds",
        "MulExtension",
        "ArithmeticExtension",
    ] {
        assert!(format!("{:?}", program.gates).contains(wanted), "the circuit has no {wanted} gate");
    }
    let dual = DualBackend { first: RayonBackend, second: QuotientBy(host_c) };
    let proof = prove(&dual, &data.prover_only, common, pw).expect("dual proof");
    data.verify(proof).expect("plonky2 verifies it");
}

#[test]
#[ignore = "needs a CUDA device; scripts/gpu-run.sh runs it"]
fn cuda_quotient_kernel_equals_plonky2_gates_in_whole_proofs() {
    quotient_kernel_agrees(CudaBackend::new(0).expect("a CUDA device"));
}

/// The device test above over the kernels built for the CPU (`cuda::emulated`): the quotient
/// kernel as the CUDA backend packs its arguments and launches it, on every machine.
#[test]
fn emulated_cuda_quotient_kernel_equals_plonky2_gates_in_whole_proofs() {
    quotient_kernel_agrees(CudaBackend::emulated().expect("a C++ compiler"));
}

fn quotient_kernel_agrees<D: prover_gpu::cuda::Device>(cuda: CudaBackend<D>) {
    cuda.quotient_kernel_ready().expect("the quotient kernel compiles");
    let dual = DualBackend { first: RayonBackend, second: cuda };
    for (hashes, seed) in [(40, 1), (2000, 2)] {
        let (data, targets) = batch_like_circuit(hashes);
        let proof = prove(&dual, &data.prover_only, &data.common, witness(&targets, seed)).expect("dual proof");
        data.verify(proof).expect("plonky2 verifies it");
    }
    let (data, pw) = recursive_circuit();
    let proof = prove(&dual, &data.prover_only, &data.common, pw).expect("dual proof of a recursive verifier");
    data.verify(proof).expect("plonky2 verifies it");
}

#[test]
fn a_wrong_quotient_value_is_caught() {
    // The dual backend is only a check if it notices a difference: corrupt one value.
    let off = QuotientBy(|q| {
        let mut v = host_c(q)?;
        let last = v.len() - 1;
        v[last] += F::ONE;
        Ok(v)
    });
    let (data, targets) = batch_like_circuit(10);
    let dual = DualBackend { first: RayonBackend, second: off };
    match prove(&dual, &data.prover_only, &data.common, witness(&targets, 3)) {
        Err(BackendError::Mismatch { kernel: "quotient_values", detail }) => {
            assert!(detail.contains("challenge 1"), "{detail}")
        }
        other => panic!("expected a quotient mismatch, got {:?}", other.map(|_| ())),
    }
}

/// The rayon backend whose quotient coefficients (not values) are off by one in the last place:
/// what a device's inverse NTT or unshift gone wrong would give.
struct CoefficientsOff;

impl Backend for CoefficientsOff {
    fn name(&self) -> &'static str {
        "rayon with a wrong quotient coefficient"
    }
    rayon_kernels!();
    fn quotient_coeffs(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let mut c = prover_gpu::quotient::coeffs_from_values(self, q)?;
        let last = c.len() - 1;
        c[last] += F::ONE;
        Ok(c)
    }
}

#[test]
fn a_wrong_quotient_coefficient_is_caught() {
    let (data, targets) = batch_like_circuit(10);
    let dual = DualBackend { first: RayonBackend, second: CoefficientsOff };
    match prove(&dual, &data.prover_only, &data.common, witness(&targets, 4)) {
        Err(BackendError::Mismatch { kernel: "quotient_coeffs", detail }) => {
            assert!(detail.starts_with("challenge 1 coefficient"), "{detail}")
        }
        other => panic!("expected a quotient coefficient mismatch, got {:?}", other.map(|_| ())),
    }
}

/// A circuit with a gate the C and the lanes do not know (a `BaseSumGate` of base 4): a value
/// split into eight base-4 limbs, and the value.
fn base_4_circuit() -> (CircuitData<F, Config, D>, Target) {
    let mut b = CircuitBuilder::<F, D>::new(CircuitConfig::standard_recursion_config());
    let x = b.add_virtual_target();
    let limbs = b.split_le_base::<4>(x, 8);
    b.register_public_inputs(&limbs);
    (b.build::<Config>(), x)
}

#[test]
fn a_gate_without_c_code_is_refused_by_name() {
    let (data, _) = base_4_circuit();
    let selectors = Selectors::of(&data.common).expect("selectors");
    match GateProgram::of(&data.common, &selectors) {
        Err(BackendError::Unsupported(why)) => assert!(why.contains("Base: 4"), "{why}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// The quotient values on plonky2's own gates (`eval_filtered_base_batch`).
fn plonky2_gates(q: &QuotientInputs<'_>) -> Result<Vec<F>> {
    q.values_on_cpu_with(CpuGates::Plonky2)
}

fn avx512_lanes(q: &QuotientInputs<'_>) -> Result<Vec<F>> {
    q.values_on_cpu_with(CpuGates::Lanes(Isa::Avx512))
}

fn avx2_lanes(q: &QuotientInputs<'_>) -> Result<Vec<F>> {
    q.values_on_cpu_with(CpuGates::Lanes(Isa::Avx2))
}

/// The rayon backend's quotient on vector lanes (`quotient_x8`: the gates, the permutation
/// terms, the combination), on each instruction set this CPU has, against plonky2's own gates and
/// the scalar terms: every quotient value at every point of the coset, in whole proofs of the
/// batch-like circuit and of a recursive verifier (every gate kind the program knows), and
/// plonky2's verifier accepts the proofs.
#[test]
fn lane_quotient_equals_plonky2s_gates_in_whole_proofs() {
    type Values = fn(&QuotientInputs<'_>) -> Result<Vec<F>>;
    let (batch, targets) = batch_like_circuit(300);
    let (recursive, pw) = recursive_circuit();
    for (isa, lanes) in [(Isa::Avx512, avx512_lanes as Values), (Isa::Avx2, avx2_lanes)] {
        if !isa.supported() {
            eprintln!("{} skipped: this CPU lacks it", isa.name());
            continue;
        }
        let dual = DualBackend { first: QuotientBy(plonky2_gates), second: QuotientBy(lanes) };
        let proof = prove(&dual, &batch.prover_only, &batch.common, witness(&targets, 4)).expect("dual proof");
        batch.verify(proof).expect("plonky2 verifies it");
        let proof = prove(&dual, &recursive.prover_only, &recursive.common, pw.clone()).expect("dual proof");
        recursive.verify(proof).expect("plonky2 verifies it");
    }
}

/// Lanes the CPU lacks are refused, not run; a circuit with a gate the lanes do not know is
/// proven on plonky2's gates.
#[test]
fn unknown_gates_fall_back_to_plonky2s_and_missing_lanes_are_refused() {
    let (data, x) = base_4_circuit();
    let mut pw = PartialWitness::new();
    pw.set_target(x, F::from_canonical_u64(0xb1e5)).expect("witness");
    let proof = prove(&RayonBackend, &data.prover_only, &data.common, pw).expect("proof on plonky2's gates");
    data.verify(proof).expect("plonky2 verifies it");

    let missing = Isa::ALL.into_iter().find(|isa| *isa != Isa::Scalar && !isa.supported());
    let (batch, targets) = batch_like_circuit(10);
    for isa in missing.into_iter().chain([Isa::Scalar]) {
        let refusing = QuotientBy(match isa {
            Isa::Avx512 => avx512_lanes,
            Isa::Avx2 => avx2_lanes,
            Isa::Scalar => |q| q.values_on_cpu_with(CpuGates::Lanes(Isa::Scalar)),
        });
        match prove(&refusing, &batch.prover_only, &batch.common, witness(&targets, 5)) {
            Err(BackendError::Unsupported(why)) => assert!(why.contains(isa.name()), "{why}"),
            other => panic!("expected Unsupported for {}, got {:?}", isa.name(), other.map(|_| ())),
        }
    }
}

//! The CUDA backend on cudarc: kernels are CUDA C in this folder, compiled by NVRTC when the
//! backend starts (once per process), with libcuda and libnvrtc loaded at run time, so every
//! build contains it and a machine without CUDA simply finds it unavailable.
//!
//! The backend's code is written against [`Device`] (buffers, copies, launches): [`Driver`] is
//! cudarc on a GPU; [`Emulated`] builds the same kernels with the host C++ compiler and runs them
//! on the CPU, so that the tests of the device run this code on every machine too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use plonky2::field::extension::FieldExtension;
use plonky2::field::types::{Field, Field64, PrimeField64};
use plonky2::hash::hash_types::HashOut;
use plonky2::hash::merkle_proofs::MerkleProof;
use plonky2::hash::merkle_tree::{MerkleCap, MerkleTree};
use plonky2::hash::poseidon::{Poseidon, PoseidonHash, ALL_ROUND_CONSTANTS};
use plonky2::plonk::circuit_data::CommonCircuitData;
use rayon::prelude::*;

use crate::backend::{
    check_combination, check_grind, check_polynomials, combine_coeffs, evaluate_coeffs, host_coeffs, host_leaf_rows,
    host_leaves, host_merkle_paths, tree_leaves, Backend, Digest, Leaves, Shape, Transfers, Tree,
};
use crate::commit::{shape, Commitment};
use crate::cpu::powers;
use crate::error::{BackendError, Result};
use crate::lanes::words_of;
use crate::layout::tree_rows;
use crate::quotient::{CosetPoints, QuotientInputs, QuotientKernelArgs};
use crate::resident::{Resident, TreeKey};
use crate::transcript::WIDTH;
use crate::{F, FE};

mod device;
pub mod emulated;
pub mod footprint;

pub use device::{
    device_count, Arg, Device, DeviceBuffer, Driver, DriverBuffer, FunctionAttributes, Source, Streams, Waits,
};
pub use emulated::Emulated;

const GOLDILOCKS: &str = include_str!("goldilocks.cuh");
const POSEIDON: &str = include_str!("poseidon.cuh");
const KERNELS: &str = include_str!("kernels.cu");
const QUOTIENT: &str = include_str!("quotient.cuh");

/// `values` as a C array named `name`, for the device or the host.
fn c_table(device: bool, name: &str, values: &[u64]) -> String {
    let q = if device { "__device__ static const unsigned long long" } else { "static const u64" };
    let list = values.iter().map(|x| format!("{x}ULL")).collect::<Vec<_>>().join(",");
    format!("{q} {name}[{}] = {{{list}}};\n", values.len())
}

/// The sum of the Poseidon MDS matrix's entries. The device's `psn_mds` multiplies 32-bit halves
/// of the lanes by them and sums in 64 bits, and reduces a high word below 2^10: both hold while
/// the sum is below 2^9 (plonky2's is 264).
const MDS_SUM: u64 = {
    let (circ, diag) = (<F as Poseidon>::MDS_MATRIX_CIRC, <F as Poseidon>::MDS_MATRIX_DIAG);
    let (mut sum, mut i) = (0, 0);
    while i < circ.len() {
        sum += circ[i] + diag[i];
        i += 1;
    }
    sum
};
const _: () = assert!(MDS_SUM < 1 << 9, "psn_mds's sums would overflow");

/// plonky2's Poseidon tables as C arrays (`PSN_RC`, `PSN_MDS_CIRC`, `PSN_MDS_DIAG`), prepended
/// to the kernels and to the host test harness.
pub fn poseidon_prelude(device: bool) -> String {
    [
        c_table(device, "PSN_RC", &ALL_ROUND_CONSTANTS),
        c_table(device, "PSN_MDS_CIRC", &<F as Poseidon>::MDS_MATRIX_CIRC),
        c_table(device, "PSN_MDS_DIAG", &<F as Poseidon>::MDS_MATRIX_DIAG),
    ]
    .concat()
}

/// The tables of plonky2's fast partial rounds (`PSN_MDS_0_0` and `PSN_FAST_*`), which the
/// permutation runs and the Poseidon gate constrains.
fn poseidon_fast_prelude(device: bool) -> String {
    let mds_0_0 = <F as Poseidon>::MDS_MATRIX_CIRC[0] + <F as Poseidon>::MDS_MATRIX_DIAG[0];
    [
        format!("#define PSN_MDS_0_0 {mds_0_0}ULL\n"),
        c_table(device, "PSN_FAST_FIRST_RC", &<F as Poseidon>::FAST_PARTIAL_FIRST_ROUND_CONSTANT),
        c_table(device, "PSN_FAST_RC", &<F as Poseidon>::FAST_PARTIAL_ROUND_CONSTANTS),
        c_table(device, "PSN_FAST_INIT", &<F as Poseidon>::FAST_PARTIAL_ROUND_INITIAL_MATRIX.concat()),
        c_table(device, "PSN_FAST_VS", &<F as Poseidon>::FAST_PARTIAL_ROUND_VS.concat()),
        c_table(device, "PSN_FAST_W_HATS", &<F as Poseidon>::FAST_PARTIAL_ROUND_W_HATS.concat()),
    ]
    .concat()
}

/// `src` without its local includes and include guard, for a single translation unit.
fn strip(src: &str) -> String {
    src.lines()
        .filter(|l| !l.starts_with("#include \"") && !l.starts_with("#pragma once"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The headers with their includes resolved, for a single translation unit.
pub fn headers(device: bool) -> String {
    format!(
        "{}\n{}\n{}\n{}\n",
        strip(GOLDILOCKS),
        poseidon_prelude(device),
        poseidon_fast_prelude(device),
        strip(POSEIDON)
    )
}

/// The batch kernels (`kernels.cu`) after the headers, as NVRTC compiles them.
pub fn kernels_source() -> String {
    format!("{}\n{}", headers(true), KERNELS)
}

/// The quotient code (`quotient.cuh`) after the headers: the `qt_values` kernel on the device,
/// `qt_values_host` on the host.
pub fn quotient_source(device: bool) -> String {
    format!("{}\n{}\n", headers(device), strip(QUOTIENT))
}

/// Whether the driver and NVRTC libraries can be loaded (cudarc panics on first use otherwise).
pub fn libraries_present() -> bool {
    // SAFETY: these only try to dlopen the libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// The CUDA backend on one device: a CUDA device through cudarc ([`Driver`], the default), or
/// the same kernels emulated on the CPU ([`Emulated`], for tests on machines without one).
pub struct CudaBackend<D: Device = Driver> {
    dev: D,
    _module: D::Module,
    scale: Kernel<D>,
    bit_reverse: Kernel<D>,
    /// `gl_ntt_stages_K` for K = 1 ..= [`NTT_MAX_STAGES`].
    stages: [Kernel<D>; NTT_MAX_STAGES],
    rows: Kernel<D>,
    pairs: Kernel<D>,
    spread: Kernel<D>,
    rows_bit_reversed: Kernel<D>,
    merkle_level: Kernel<D>,
    grind: Kernel<D>,
    gather: Kernel<D>,
    paths: Kernel<D>,
    intt_finish: Kernel<D>,
    dot_chunks: Kernel<D>,
    combine: Kernel<D>,
    /// Commitments' leaves on the device: kept for the proof that made them, or cached for the
    /// quotient (see [`crate::resident`]).
    resident: Resident<DeviceTree<D>>,
    device: String,
    /// Device memory in use when the backend started, and the most seen in use since.
    used_at_start: usize,
    peak_used: AtomicUsize,
    /// Bytes copied host to device and device to host since the backend started.
    to_device: AtomicU64,
    from_device: AtomicU64,
    /// The quotient kernel, compiled on first use (it is large, and only our circuits' gates
    /// need it), or why it did not compile.
    quotient: OnceLock<Compiled<D>>,
    /// The NTTs' coset shifts and twiddles on the device, `[1, x, x², …]` by `(x, count)`:
    /// computed on the host and uploaded once, not at every NTT (for 2^17 points, 2^17 + 2^16
    /// sequential products and 1.5 MB to copy).
    powers: Mutex<PowerTables<D>>,
    /// The quotient coset's points and `L₀` on the device, by `(log2 points, quotient bits)`:
    /// the same in every proof of a circuit (see [`CosetPoints`]), so uploaded once.
    coset_points: Mutex<PointTables<D>>,
}

/// A commitment's tree on the device: its leaves, row after row, and, where the commitment
/// kept them there ([`Leaves::Kept`]), its digests in plonky2's layout. Its coefficients (one
/// polynomial after another) are set where the commitment kept them, or uploaded from the host
/// on the first evaluation of a cached tree (the circuit's constants and sigmas, read by every
/// proof).
struct DeviceTree<D: Device> {
    rows: D::Buffer,
    digests: Option<D::Buffer>,
    coeffs: OnceLock<D::Buffer>,
}

impl<D: Device> DeviceTree<D> {
    fn new(rows: D::Buffer, digests: Option<D::Buffer>, coeffs: Option<D::Buffer>) -> Self {
        let cell = OnceLock::new();
        if let Some(c) = coeffs {
            let _ = cell.set(c);
        }
        Self { rows, digests, coeffs: cell }
    }
}

/// [`CosetPoints`] on the device: the points, then `L₀`.
type DevicePoints<D> = (<D as Device>::Buffer, <D as Device>::Buffer);

/// [`DevicePoints`] by `(log2 points, quotient bits)`.
type PointTables<D> = HashMap<(usize, usize), Arc<DevicePoints<D>>>;

/// The quotient kernel's module and kernel, or why they did not compile.
type Compiled<D> = std::result::Result<(<D as Device>::Module, Kernel<D>), String>;

/// `[1, x, x², …]` on the device by `(x, count)`.
type PowerTables<D> = HashMap<(u64, usize), Arc<<D as Device>::Buffer>>;

/// Most tables of powers [`CudaBackend`] keeps on the device (a proof uses a handful: one shift
/// and one root of unity per NTT size); past it the cache starts again.
const MAX_POWER_TABLES: usize = 64;

/// The device's memory divided by this is what resident commitments may hold at most (a batch
/// proof in flight holds its wires and Z, about 160 MB, and each circuit its constants and
/// sigmas, about 90 MB).
const RESIDENT_SHARE: usize = 4;

/// Canonical words for an upload, in parallel: [`CudaBackend::up_values`]'s path for values
/// that are not all canonical already.
fn to_u64(v: &[F]) -> Vec<u64> {
    v.par_iter().map(|x| x.to_canonical_u64()).collect()
}

/// Threads per block of the kernels with many registers a thread: the Poseidon ones and the NTT's
/// four stages a launch. A block may use at most 64 Ki registers, so 1 024 threads fail to
/// launch once a thread needs more than 64, and these do (68 to 82 on sm_90:
/// `scripts/nvrtc-check.sh`); 256 threads allow up to 255, the most a thread can have.
const HEAVY_BLOCK: u32 = 256;

/// Threads per block of the kernels that need few registers (gathers, scaling, transposes).
const DEFAULT_BLOCK: u32 = 1024;

/// The batch kernels, as `kernels.cu` names them, with the threads per block each is launched
/// with (at most: a kernel whose compiled form cannot run that many runs fewer).
/// [`CudaBackend::new`] loads them in this order.
pub const KERNEL_FUNCTIONS: [(&str, u32); 17] = [
    ("gl_scale_powers", DEFAULT_BLOCK),
    ("gl_bit_reverse", DEFAULT_BLOCK),
    ("gl_ntt_stages_1", DEFAULT_BLOCK),
    ("gl_ntt_stages_2", DEFAULT_BLOCK),
    ("gl_ntt_stages_3", DEFAULT_BLOCK),
    ("gl_ntt_stages_4", HEAVY_BLOCK),
    ("psn_hash_rows", HEAVY_BLOCK),
    ("psn_hash_pairs", HEAVY_BLOCK),
    ("gl_spread", DEFAULT_BLOCK),
    ("gl_rows_bit_reversed", DEFAULT_BLOCK),
    ("psn_merkle_level", HEAVY_BLOCK),
    ("fri_grind", HEAVY_BLOCK),
    ("gl_gather_rows", DEFAULT_BLOCK),
    ("psn_gather_paths", DEFAULT_BLOCK),
    ("gl_intt_finish", DEFAULT_BLOCK),
    ("gl_dot_chunks", DEFAULT_BLOCK),
    ("gl_combine", DEFAULT_BLOCK),
];

/// The quotient kernel (`quotient.cuh`) and its threads per block: each thread holds a Poseidon
/// state and the α-accumulators, so fewer than the default.
pub const QUOTIENT_FUNCTION: (&str, u32) = ("qt_values", 128);

/// Most radix-2 stages one launch of the NTT runs (`gl_ntt_stages_K`, K ≤ this): a thread holds
/// 2^K elements in registers.
pub const NTT_MAX_STAGES: usize = 4;

/// The NTT's launches for 2^log_n points: `(log_half, K)`, K stages from span 2^log_half, as many
/// of [`NTT_MAX_STAGES`] as are left. The emulation of the kernels on the host runs the same.
pub fn ntt_stage_groups(log_n: u32) -> Vec<(u32, u32)> {
    let mut groups = Vec::new();
    let mut log_half = 0;
    while log_half < log_n {
        let k = (log_n - log_half).min(NTT_MAX_STAGES as u32);
        groups.push((log_half, k));
        log_half += k;
    }
    groups
}

/// A loaded kernel and the threads per block it is launched with: the block its table asks for,
/// or fewer where the compiled function cannot run that many (the driver's
/// `MAX_THREADS_PER_BLOCK`, which falls as a thread's registers rise: a kernel compiled with more
/// registers on another device or driver still launches, in smaller blocks). Every kernel
/// checks its thread index against its sizes, so the grid may overshoot.
struct Kernel<D: Device> {
    f: D::Function,
    name: &'static str,
    block: u32,
}

impl<D: Device> Kernel<D> {
    fn load(dev: &D, module: &D::Module, (name, block): (&'static str, u32)) -> Result<Self> {
        let f = dev.function(module, name)?;
        let max = dev.max_threads_per_block(&f)?;
        // Whole warps, and at least one.
        let fits = u32::try_from(max).unwrap_or(0) / 32 * 32;
        if fits == 0 {
            return Err(BackendError::Cuda(format!("{name} cannot launch: {max} threads per block at most")));
        }
        Ok(Self { f, name, block: block.min(fits) })
    }

    /// One thread per item, `n` items: `(blocks, threads per block)`.
    fn config(&self, n: usize) -> Result<(u32, u32)> {
        let blocks = u32::try_from(n.div_ceil(self.block as usize))
            .map_err(|_| BackendError::Shape(format!("{n} threads of {}", self.name)))?;
        Ok((blocks, self.block))
    }

    fn info(&self, dev: &D) -> Result<KernelInfo> {
        let a = dev.attributes(&self.f)?;
        Ok(KernelInfo {
            name: self.name,
            block: self.block,
            registers: a.registers,
            local_bytes: a.local_bytes,
            max_threads_per_block: a.max_threads_per_block,
        })
    }
}

/// What the driver says of one loaded kernel: the block it is launched with, its registers per
/// thread and local memory per thread, and the most threads a block of it can have.
#[derive(Clone, Debug)]
pub struct KernelInfo {
    /// The function's name in the CUDA source.
    pub name: &'static str,
    /// Threads per block it is launched with.
    pub block: u32,
    /// Registers per thread.
    pub registers: i32,
    /// Local memory per thread, in bytes (a stack frame or register spills).
    pub local_bytes: i32,
    /// The most threads per block the compiled function can run.
    pub max_threads_per_block: i32,
}

/// Coefficients per thread of `gl_dot_chunks`, as a power of two: 2^14 coefficients of 135
/// polynomials are 8 640 threads of 256 products each.
const DOT_CHUNK_BITS: usize = 8;

/// An extension element as the kernels take it: `[a, b]` for a + b·X, canonical.
fn ext_words(x: FE) -> [u64; 2] {
    FieldExtension::<2>::to_basefield_array(&x).map(|e| e.to_canonical_u64())
}

/// [`ext_words`] back: two canonical words.
fn ext_of(words: &[u64]) -> FE {
    FE::from_basefield_array([F::from_canonical_u64(words[0]), F::from_canonical_u64(words[1])])
}

/// Digests from their words, four by four.
fn digests_of(words: &[u64]) -> Vec<Digest> {
    words.chunks_exact(4).map(|c| HashOut { elements: std::array::from_fn(|i| F::from_canonical_u64(c[i])) }).collect()
}

/// A gather of `rows` from a device buffer of `len` elements holding the leaves `key` names:
/// the buffer is the key's shape and every row is inside it.
fn gather_check(key: &TreeKey, len: usize, rows: &[usize]) -> Result<()> {
    if len != key.rows() * key.width() || key.width() == 0 {
        return Err(BackendError::Shape(format!("{len} elements kept for {} rows of {}", key.rows(), key.width())));
    }
    match rows.iter().find(|&&r| r >= key.rows()) {
        Some(r) => Err(BackendError::Shape(format!("row {r} of a tree of {} leaves", key.rows()))),
        None => Ok(()),
    }
}

fn small(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| BackendError::Shape(format!("{n} does not fit a kernel argument")))
}

impl CudaBackend<Driver> {
    /// Opens device `ordinal` and compiles the kernels, or says why it cannot; its streams as
    /// [`Streams::from_env`] says.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_streams(ordinal, Streams::from_env()?)
    }

    /// [`Self::new`] with these streams.
    pub fn with_streams(ordinal: usize, streams: Streams) -> Result<Self> {
        Self::on(Driver::new(ordinal, streams)?)
    }
}

impl CudaBackend<Emulated> {
    /// The backend over the kernels emulated on the CPU ([`emulated`]): for tests, on any
    /// machine with a C++ compiler.
    pub fn emulated() -> Result<Self> {
        Self::on(Emulated::new())
    }
}

impl<D: Device> CudaBackend<D> {
    /// The backend on `dev`, its batch kernels compiled.
    pub fn on(dev: D) -> Result<Self> {
        let device = dev.name()?;
        let module = dev.compile(Source::Kernels)?;
        let [scale, bit_reverse, s1, s2, s3, s4, rows, pairs, spread, rows_bit_reversed, merkle_level, grind, gather, paths, intt_finish, dot_chunks, combine] =
            KERNEL_FUNCTIONS.map(|k| Kernel::load(&dev, &module, k));
        let (free, total) = dev.memory()?;
        Ok(Self {
            used_at_start: total - free,
            peak_used: AtomicUsize::new(total - free),
            to_device: AtomicU64::new(0),
            from_device: AtomicU64::new(0),
            scale: scale?,
            bit_reverse: bit_reverse?,
            stages: [s1?, s2?, s3?, s4?],
            rows: rows?,
            pairs: pairs?,
            spread: spread?,
            rows_bit_reversed: rows_bit_reversed?,
            merkle_level: merkle_level?,
            grind: grind?,
            gather: gather?,
            paths: paths?,
            intt_finish: intt_finish?,
            dot_chunks: dot_chunks?,
            combine: combine?,
            resident: Resident::new(total / RESIDENT_SHARE),
            dev,
            _module: module,
            device,
            quotient: OnceLock::new(),
            powers: Mutex::new(HashMap::new()),
            coset_points: Mutex::new(HashMap::new()),
        })
    }

    /// What the driver says of each loaded kernel (the quotient's once it is compiled).
    pub fn kernels(&self) -> Result<Vec<KernelInfo>> {
        let batch = [
            &self.scale,
            &self.bit_reverse,
            &self.stages[0],
            &self.stages[1],
            &self.stages[2],
            &self.stages[3],
            &self.rows,
            &self.pairs,
            &self.spread,
            &self.rows_bit_reversed,
            &self.merkle_level,
            &self.grind,
            &self.gather,
            &self.paths,
            &self.intt_finish,
            &self.dot_chunks,
            &self.combine,
        ];
        let quotient = self.quotient.get().and_then(|q| q.as_ref().ok()).map(|(_, k)| k);
        batch.into_iter().chain(quotient).map(|k| k.info(&self.dev)).collect()
    }

    /// Compiles the quotient kernel now, or says why it does not compile (otherwise the
    /// quotient quietly stays on the CPU, with one warning).
    pub fn quotient_kernel_ready(&self) -> Result<()> {
        self.quotient_kernel().map(|_| ()).map_err(|why| BackendError::Cuda(why.to_string()))
    }

    /// The quotient kernel, compiling it the first time.
    fn quotient_kernel(&self) -> std::result::Result<&Kernel<D>, &str> {
        let compiled = self.quotient.get_or_init(|| {
            let module = self.dev.compile(Source::Quotient).map_err(|e| e.to_string())?;
            let kernel = Kernel::load(&self.dev, &module, QUOTIENT_FUNCTION).map_err(|e| e.to_string())?;
            Ok((module, kernel))
        });
        match compiled {
            Ok((_, f)) => Ok(f),
            Err(why) => Err(why.as_str()),
        }
    }

    /// The quotient values on the device from packed arguments, left there
    /// (`num_challenges × size`, challenge by challenge).
    fn quotient_on_device(&self, f: &Kernel<D>, a: &QuotientKernelArgs, q: &QuotientInputs<'_>) -> Result<D::Buffer> {
        let challenges = q.common.config.num_challenges;
        let words = QuotientKernelArgs::words;
        let [cs, wires, zs] = q.trees().map(|(c, _)| self.leaves_on_device(&c.merkle_tree, shape(c)));
        let (cs, wires, zs) = (cs?, wires?, zs?);
        if [cs.rows.len(), wires.rows.len(), zs.rows.len()] != a.leaf_elements() {
            return Err(BackendError::Shape("the quotient's leaves do not match its arguments".into()));
        }
        let shape = self.up_u32(&a.shape)?;
        let gates = self.up_u32(&a.gates)?;
        let params = self.up(&words(&a.params))?;
        let points = self.points_on_device(&a.points, a.shape[13] as usize)?;
        let (xs, l0s) = points.as_ref();
        let zh_inv = self.up(&words(&a.zh_inv))?;
        let mut out = self.dev.alloc_zeros(challenges * a.size)?;
        let size = a.size as u64;
        // SAFETY: `QuotientKernelArgs` is checked against its shape when made, and the kernel
        // reads within the shape and writes `challenges × size` values.
        unsafe {
            self.launch(
                f,
                a.size,
                &mut [
                    Arg::In(&shape),
                    Arg::In(&gates),
                    Arg::In(&params),
                    Arg::In(&cs.rows),
                    Arg::In(&wires.rows),
                    Arg::In(&zs.rows),
                    Arg::In(xs),
                    Arg::In(l0s),
                    Arg::In(&zh_inv),
                    Arg::U64(size),
                    Arg::Out(&mut out),
                ],
            )?;
        }
        self.note_memory();
        Ok(out)
    }

    /// The quotient kernel and its arguments for `q`, or `None` where the quotient runs on the
    /// CPU: the kernel did not compile (said once, as a warning) or it does not take the circuit.
    fn quotient_launch(&self, q: &QuotientInputs<'_>) -> Result<Option<(&Kernel<D>, QuotientKernelArgs)>> {
        // The kernel first, so that a quotient which ends up on the CPU packs nothing.
        let f = match self.quotient_kernel() {
            Ok(f) => f,
            Err(why) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!("the quotient kernel did not compile, so the quotient runs on the CPU: {why}")
                });
                return Ok(None);
            }
        };
        match q.kernel_args() {
            Ok(args) => Ok(Some((f, args))),
            Err(BackendError::Unsupported(why)) => {
                tracing::debug!("quotient on the CPU: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A commitment's tree (of `shape`) on the device: the one its commitment left there when
    /// this backend made it (or an earlier quotient uploaded), else its leaves uploaded from the
    /// host's copy now and cached.
    fn leaves_on_device(&self, tree: &Tree, shape: Shape) -> Result<Arc<DeviceTree<D>>> {
        let key = TreeKey::of(tree, shape);
        if let Some(t) = self.resident.get(&key) {
            return Ok(t);
        }
        let words: Vec<u64> =
            host_leaves(tree, shape)?.par_iter().flat_map_iter(|l| l.iter().map(|x| x.to_canonical_u64())).collect();
        let t = Arc::new(DeviceTree::new(self.up(&words)?, None, None));
        tracing::debug!("uploaded {} leaf elements for the quotient: not resident", words.len());
        self.resident.insert(key, t.clone(), words.len() * 8);
        Ok(t)
    }

    /// The quotient coset's points and `L₀` on the device, uploaded on first use of their shape
    /// and kept (at most [`MAX_POWER_TABLES`] shapes, past which the cache starts again).
    fn points_on_device(&self, points: &CosetPoints, quotient_bits: usize) -> Result<Arc<DevicePoints<D>>> {
        let key = (points.xs.len().trailing_zeros() as usize, quotient_bits);
        let mut cached = self.coset_points.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cached.get(&key) {
            return Ok(p.clone());
        }
        if cached.len() >= MAX_POWER_TABLES {
            cached.clear();
        }
        let words = QuotientKernelArgs::words;
        let uploaded = Arc::new((self.up(&words(&points.xs))?, self.up(&words(&points.l0s))?));
        cached.insert(key, uploaded.clone());
        Ok(uploaded)
    }

    /// `[1, x, x², …]` of length `count` on the device, uploaded on first use and kept (see
    /// `powers` in [`CudaBackend`]). A kernel that reads a table waits for its upload, on
    /// whichever stream it was made ([`Device`]).
    fn powers_on_device(&self, x: F, count: usize) -> Result<Arc<D::Buffer>> {
        let key = (x.to_canonical_u64(), count);
        let mut tables = self.powers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tables.get(&key) {
            return Ok(t.clone());
        }
        if tables.len() >= MAX_POWER_TABLES {
            tables.clear();
        }
        let t = Arc::new(self.up_values(&powers(x, count))?);
        tables.insert(key, t.clone());
        Ok(t)
    }

    /// The coset NTT of the `batch` polynomials of `n` in `a` (natural order in and out), as
    /// [`Backend::coset_ntt_batch`]: scaled by the powers of `shift` in place, then bit-reversed
    /// into a new buffer and transformed there, which is returned.
    fn ntt_on_device(&self, a: &mut D::Buffer, n: usize, batch: usize, shift: F) -> Result<D::Buffer> {
        let len = n * batch;
        let log_n = n.trailing_zeros() as usize;
        let mut b = self.dev.alloc_zeros(len)?;
        let shifts = self.powers_on_device(shift, n)?;
        let twiddles = self.powers_on_device(F::primitive_root_of_unity(log_n), n / 2)?;
        let (batch32, log32) = (small(batch)?, small(log_n)?);
        // SAFETY: every kernel checks its index against the sizes passed with the buffers, and
        // `a` and `b` hold `n × batch` elements.
        unsafe {
            self.launch(
                &self.scale,
                len,
                &mut [Arg::Out(&mut *a), Arg::In(shifts.as_ref()), Arg::U32(log32), Arg::U32(batch32)],
            )?;
            self.launch(
                &self.bit_reverse,
                len,
                &mut [Arg::In(&*a), Arg::Out(&mut b), Arg::U32(log32), Arg::U32(batch32)],
            )?;
            for (log_half, k) in ntt_stage_groups(log32) {
                let kernel = &self.stages[k as usize - 1];
                self.launch(
                    kernel,
                    len >> k,
                    &mut [
                        Arg::Out(&mut b),
                        Arg::In(twiddles.as_ref()),
                        Arg::U32(log32),
                        Arg::U32(batch32),
                        Arg::U32(log_half),
                    ],
                )?;
            }
        }
        Ok(b)
    }

    /// plonky2's Merkle tree over `leaves` rows of `width` held on the device: the leaf hashes,
    /// then one launch per level that places its digests in plonky2's layout and hashes them in
    /// pairs. The digests stay on the device (`4 × digests` words, at least one); the cap comes
    /// back.
    fn tree_on_device(
        &self,
        rows: &D::Buffer,
        width: usize,
        leaves: usize,
        cap_height: usize,
    ) -> Result<(D::Buffer, usize, Vec<Digest>)> {
        if tree_leaves(rows.len(), width, cap_height)? != leaves {
            return Err(BackendError::Shape(format!("{} elements for {leaves} leaves of {width}", rows.len())));
        }
        let sub_height = leaves.trailing_zeros() as usize - cap_height;
        let num_digests = (2 * ((1usize << sub_height) - 1)) << cap_height;
        let mut level = self.dev.alloc_zeros(4 * leaves)?;
        // At least one word: an all-cap tree has no digests, and a zero-byte allocation fails.
        let mut digests = self.dev.alloc_zeros((4 * num_digests).max(1))?;
        let (w, count, sub) = (small(width)?, small(leaves)?, small(sub_height)?);
        // SAFETY: `rows` holds `leaves × width` elements (checked above); the row kernel writes
        // `4 × leaves`; each level reads `8 × count` and writes `4 × count` words into `next`
        // and `8 × count` at digest positions below `num_digests` (the layout of `layout.rs`).
        unsafe {
            self.launch(&self.rows, leaves, &mut [Arg::In(rows), Arg::U32(w), Arg::U32(count), Arg::Out(&mut level)])?;
            for h in 0..sub_height {
                let parents = leaves >> (h + 1);
                let mut next = self.dev.alloc_zeros(4 * parents)?;
                let (p32, h32) = (small(parents)?, small(h)?);
                self.launch(
                    &self.merkle_level,
                    parents,
                    &mut [
                        Arg::In(&level),
                        Arg::Out(&mut next),
                        Arg::Out(&mut digests),
                        Arg::U32(p32),
                        Arg::U32(sub),
                        Arg::U32(h32),
                    ],
                )?;
                level = next;
            }
        }
        self.note_memory();
        let cap = self.down(&level)?;
        Ok((digests, num_digests, digests_of(&cap)))
    }

    /// Digests left on the device by [`CudaBackend::tree_on_device`], on the host.
    fn digests_to_host(&self, digests: &D::Buffer, count: usize) -> Result<Vec<Digest>> {
        let words = self.down(digests)?;
        Ok(digests_of(&words[..4 * count]))
    }

    /// [`Backend::commit_tree`] of coefficients already on the device (`batch × n` of them,
    /// canonical): zero-padded to the LDE's length there, transformed, transposed into leaves
    /// and hashed, with the leaves brought to the host or kept as `leaves` says (kept with the
    /// coefficients, for [`Backend::evaluate`] and [`Backend::combine`]).
    fn commit_on_device(
        &self,
        compact: D::Buffer,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        leaves: Leaves,
    ) -> Result<Tree> {
        check_polynomials(compact.len(), n)?;
        let batch = compact.len() / n;
        let m = n << rate_bits;
        if m < 2 || (1 << cap_height) > m {
            return Err(BackendError::Shape(format!("{m} rows for a cap of height {cap_height}")));
        }
        let (log_n, log_m) = (small(n.trailing_zeros() as usize)?, small(m.trailing_zeros() as usize)?);
        let batch32 = small(batch)?;
        // Zero-padded to the LDE's length.
        let mut padded = self.dev.alloc_zeros(batch * m)?;
        // SAFETY: `compact` holds `batch × n` and `padded` `batch × m` elements; the kernel
        // reads and writes within them.
        unsafe {
            self.launch(
                &self.spread,
                batch * n,
                &mut [Arg::In(&compact), Arg::Out(&mut padded), Arg::U32(log_n), Arg::U32(log_m), Arg::U32(batch32)],
            )?;
        }
        let compact = (leaves == Leaves::Kept).then_some(compact);
        let values = self.ntt_on_device(&mut padded, m, batch, F::coset_shift())?;
        self.note_memory();
        drop(padded);
        // The leaves: rows in bit-reversed order, row-major, as plonky2 stores them.
        let mut rows = self.dev.alloc_zeros(batch * m)?;
        // SAFETY: both buffers hold `batch × m` elements.
        unsafe {
            self.launch(
                &self.rows_bit_reversed,
                batch * m,
                &mut [Arg::In(&values), Arg::Out(&mut rows), Arg::U32(log_m), Arg::U32(batch32)],
            )?;
        }
        drop(values);
        let (digests, num_digests, cap) = self.tree_on_device(&rows, batch, m, cap_height)?;
        let key = TreeKey::new(&cap, m, batch);
        let leaf_bytes = batch * m * 8;
        Ok(match leaves {
            // The only copy of the leaves and digests: held until the prover releases them.
            Leaves::Kept => {
                let bytes = leaf_bytes + digests.len() * 8 + batch * n * 8;
                let tree = DeviceTree::new(rows, Some(digests), compact);
                self.resident.hold(key, Arc::new(tree), bytes);
                MerkleTree { leaves: Vec::new(), digests: Vec::new(), cap: MerkleCap(cap) }
            }
            // On the host too, and the leaves cached here for a quotient that reads them.
            Leaves::Host => {
                let host_digests = self.digests_to_host(&digests, num_digests)?;
                let words = self.down(&rows)?;
                self.resident.insert(key, Arc::new(DeviceTree::new(rows, None, None)), leaf_bytes);
                let leaves =
                    words.par_chunks(batch).map(|r| r.iter().map(|&x| F::from_canonical_u64(x)).collect()).collect();
                MerkleTree { leaves, digests: host_digests, cap: MerkleCap(cap) }
            }
        })
    }

    /// Commitments whose leaves are on the device now, kept or cached.
    pub fn resident_commitments(&self) -> usize {
        self.resident.len()
    }

    /// Commitments whose leaves are kept on the device now ([`Leaves::Kept`]) and not yet
    /// released.
    pub fn held_commitments(&self) -> usize {
        self.resident.held()
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device
    }

    /// `words` copied to a new device buffer, counted in [`Backend::transfers`].
    fn up(&self, words: &[u64]) -> Result<D::Buffer> {
        self.to_device.fetch_add(std::mem::size_of_val(words) as u64, Ordering::Relaxed);
        self.dev.upload(words)
    }

    /// `values` as canonical words in a new device buffer: uploaded from where they lie when
    /// every one is canonical (a parallel check: 1.4 ms for a batch proof's 35 MB of wire
    /// columns on two cores), else through a canonical copy ([`to_u64`]). The wire columns come
    /// canonical (`witness::wire_columns`), so a proof's largest upload copies nothing on the
    /// host; the copy and the conversion it replaced took 29 ms on two cores, 43 ms on one.
    fn up_values(&self, values: &[F]) -> Result<D::Buffer> {
        if values.par_iter().with_min_len(1 << 14).all(|x| x.0 < F::ORDER) {
            self.up(words_of(values))
        } else {
            self.up(&to_u64(values))
        }
    }

    /// `u32`s copied to a new device buffer for a kernel's `const u32 *` parameter: two to a
    /// word, the first in the low half (the device and the host are little-endian), a zero after
    /// an odd count.
    fn up_u32(&self, values: &[u32]) -> Result<D::Buffer> {
        let words: Vec<u64> =
            values.chunks(2).map(|p| u64::from(p[0]) | u64::from(p.get(1).copied().unwrap_or(0)) << 32).collect();
        self.up(&words)
    }

    /// A device buffer copied to the host (once the work that wrote it is done), counted in
    /// [`Backend::transfers`].
    fn down(&self, buffer: &D::Buffer) -> Result<Vec<u64>> {
        self.from_device.fetch_add(8 * buffer.len() as u64, Ordering::Relaxed);
        self.dev.download(buffer)
    }

    /// Launches `k` with one thread per item, `n` items.
    ///
    /// # Safety
    /// As [`Device::launch`]: `args` are the kernel's parameters in order, and for the sizes
    /// given it reads and writes only inside the buffers given.
    unsafe fn launch(&self, k: &Kernel<D>, n: usize, args: &mut [Arg<'_, D::Buffer>]) -> Result<()> {
        let (blocks, threads) = k.config(n)?;
        // SAFETY: the caller's contract.
        unsafe { self.dev.launch(&k.f, k.name, blocks, threads, args) }
    }

    /// Samples the device's memory in use (called while a kernel's buffers are allocated).
    fn note_memory(&self) {
        if let Ok((free, total)) = self.dev.memory() {
            self.peak_used.fetch_max(total - free, Ordering::Relaxed);
        }
    }

    /// `c`'s coefficients on the device, with the tree that holds them: where the commitment kept
    /// them, or, for a tree cached here whose coefficients the host has, uploaded now and
    /// attached to it (once: the constants and sigmas of a circuit serve every later proof).
    /// `None` where this backend has no tree for `c`. Checked to be `width × 2^degree_log`.
    fn coeffs_on_device(&self, c: &Commitment) -> Result<Option<Arc<DeviceTree<D>>>> {
        let shape = shape(c);
        let key = TreeKey::of(&c.merkle_tree, shape);
        let Some(tree) = self.resident.get(&key) else {
            return Ok(None);
        };
        if tree.coeffs.get().is_none() {
            let Ok(host) = host_coeffs(c) else {
                return Ok(None);
            };
            let words: Vec<u64> = host.par_iter().flat_map_iter(|p| p.iter().map(|x| x.to_canonical_u64())).collect();
            let bytes = words.len() * 8;
            if tree.coeffs.set(self.up(&words)?).is_ok() {
                self.resident.grow(&key, bytes);
                tracing::debug!("uploaded {} coefficients of a cached tree, once", words.len());
            }
        }
        match tree.coeffs.get() {
            Some(k) if k.len() == shape.width << c.degree_log => Ok(Some(tree)),
            Some(k) => Err(BackendError::Shape(format!(
                "{} coefficients on the device for {} polynomials of 2^{}",
                k.len(),
                shape.width,
                c.degree_log
            ))),
            None => Ok(None),
        }
    }

    fn download_digests(&self, res: &D::Buffer, out: &mut [Digest]) -> Result<()> {
        let v = self.down(res)?;
        for (o, d) in out.iter_mut().zip(digests_of(&v)) {
            *o = d;
        }
        Ok(())
    }
}

impl<D: Device> Backend for CudaBackend<D> {
    fn name(&self) -> &'static str {
        D::BACKEND
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        Some(self.peak_used.load(Ordering::Relaxed).saturating_sub(self.used_at_start) as u64)
    }

    /// [`footprint::check`] against the memory free on the device now.
    fn check_memory(&self, circuits: &[&CommonCircuitData<F, 2>], in_flight: usize) -> Result<()> {
        let (free, _) = self.dev.memory()?;
        let circuits: Vec<_> = circuits.iter().map(|c| footprint::Footprint::of(c)).collect();
        footprint::check(&circuits, in_flight, free as u64)
    }

    fn device_streams(&self) -> Option<usize> {
        Some(self.dev.streams())
    }

    fn transfers(&self) -> Option<Transfers> {
        Some(Transfers {
            to_device: self.to_device.load(Ordering::Relaxed),
            from_device: self.from_device.load(Ordering::Relaxed),
        })
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        if n < 2 || !n.is_power_of_two() || !data.len().is_multiple_of(n) {
            return Err(BackendError::Shape(format!("{} elements in polynomials of {n}", data.len())));
        }
        let mut a = self.up_values(data)?;
        let b = self.ntt_on_device(&mut a, n, data.len() / n, shift)?;
        self.note_memory();
        let out = self.down(&b)?;
        for (d, v) in data.iter_mut().zip(out) {
            *d = F::from_canonical_u64(v);
        }
        Ok(())
    }

    fn commit_tree(&self, coeffs: &[F], n: usize, rate_bits: usize, cap_height: usize, leaves: Leaves) -> Result<Tree> {
        check_polynomials(coeffs.len(), n)?;
        let compact = self.up_values(coeffs)?;
        self.commit_on_device(compact, n, rate_bits, cap_height, leaves)
    }

    fn commit_values_tree(
        &self,
        values: Cow<'_, [F]>,
        n: usize,
        rate_bits: usize,
        cap_height: usize,
        leaves: Leaves,
    ) -> Result<(Vec<F>, Tree)> {
        if n < 2 || !n.is_power_of_two() || values.is_empty() || !values.len().is_multiple_of(n) {
            return Err(BackendError::Shape(format!("{} elements in polynomials of {n}", values.len())));
        }
        let batch = values.len() / n;
        let mut a = self.up_values(&values)?;
        drop(values);
        // The inverse NTT as the trait's `intt_batch` derives it: the DFT, read at −j, over n.
        let dft = self.ntt_on_device(&mut a, n, batch, F::ONE)?;
        drop(a);
        let mut coeffs = self.dev.alloc_zeros(n * batch)?;
        let n_inv = F::inverse_2exp(n.trailing_zeros() as usize).to_canonical_u64();
        let (log_n, batch32) = (small(n.trailing_zeros() as usize)?, small(batch)?);
        // SAFETY: both buffers hold `batch × n` elements; the kernel reads and writes within them.
        unsafe {
            self.launch(
                &self.intt_finish,
                n * batch,
                &mut [Arg::In(&dft), Arg::Out(&mut coeffs), Arg::U32(log_n), Arg::U32(batch32), Arg::U64(n_inv)],
            )?;
        }
        drop(dft);
        // Kept, the coefficients stay on the device with the tree: the openings and FRI's
        // combination read them there (`evaluate`, `combine`), and none come back.
        let host = match leaves {
            Leaves::Kept => Vec::new(),
            Leaves::Host => self.down(&coeffs)?.into_iter().map(F::from_canonical_u64).collect(),
        };
        let tree = self.commit_on_device(coeffs, n, rate_bits, cap_height, leaves)?;
        Ok((host, tree))
    }

    fn leaf_rows(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<Vec<F>>> {
        if !tree.leaves.is_empty() {
            return host_leaf_rows(tree, shape, rows);
        }
        let key = TreeKey::of(tree, shape);
        let Some(kept) = self.resident.get(&key) else {
            return Err(BackendError::Shape(format!(
                "the leaves of a tree of {} rows of {} are neither on the host nor on the device",
                shape.rows, shape.width
            )));
        };
        let (leaves, width) = (&kept.rows, shape.width);
        gather_check(&key, leaves.len(), rows)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let indices: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
        let indices = self.up(&indices)?;
        let mut out = self.dev.alloc_zeros(rows.len() * width)?;
        let (w, count) = (small(width)?, small(rows.len())?);
        // SAFETY: `leaves` holds `key.rows() × width` elements and every index is below
        // `key.rows()` (checked above); the kernel writes `count × width` elements.
        unsafe {
            self.launch(
                &self.gather,
                rows.len() * width,
                &mut [Arg::In(leaves), Arg::U32(w), Arg::In(&indices), Arg::U32(count), Arg::Out(&mut out)],
            )?;
        }
        let words = self.down(&out)?;
        Ok(words.chunks(width).map(|r| r.iter().map(|&x| F::from_canonical_u64(x)).collect()).collect())
    }

    fn merkle_paths(&self, tree: &Tree, shape: Shape, rows: &[usize]) -> Result<Vec<MerkleProof<F, PoseidonHash>>> {
        // Digests on the host, or none at all (a tree that is all cap).
        if tree_rows(tree) == shape.rows {
            return host_merkle_paths(tree, shape, rows);
        }
        let key = TreeKey::of(tree, shape);
        let kept = self.resident.get(&key);
        let Some(digests) = kept.as_ref().and_then(|t| t.digests.as_ref()) else {
            return Err(BackendError::Shape(format!(
                "the digests of a tree of {} rows of {} are neither on the host nor on the device",
                shape.rows, shape.width
            )));
        };
        let caps = tree.cap.0.len();
        if !caps.is_power_of_two() || !shape.rows.is_power_of_two() || caps >= shape.rows {
            return Err(BackendError::Shape(format!("a cap of {caps} over {} rows", shape.rows)));
        }
        let sub_height = (shape.rows / caps).trailing_zeros() as usize;
        if digests.len() != 4 * 2 * (shape.rows - caps) {
            return Err(BackendError::Shape(format!("{} digest words kept for {} rows", digests.len(), shape.rows)));
        }
        if let Some(r) = rows.iter().find(|&&r| r >= shape.rows) {
            return Err(BackendError::Shape(format!("row {r} of a tree of {} leaves", shape.rows)));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let indices: Vec<u64> = rows.iter().map(|&r| r as u64).collect();
        let indices = self.up(&indices)?;
        let mut out = self.dev.alloc_zeros(4 * rows.len() * sub_height)?;
        let (sub, count) = (small(sub_height)?, small(rows.len())?);
        // SAFETY: every index is below `shape.rows` (checked above), so each sibling position is
        // inside the `2·(rows − caps)` digests kept (checked above); the kernel writes
        // `4 × count × sub_height` words.
        unsafe {
            self.launch(
                &self.paths,
                rows.len() * sub_height,
                &mut [Arg::In(digests), Arg::U32(sub), Arg::In(&indices), Arg::U32(count), Arg::Out(&mut out)],
            )?;
        }
        let siblings = digests_of(&self.down(&out)?);
        Ok(siblings.chunks(sub_height).map(|c| MerkleProof { siblings: c.to_vec() }).collect())
    }

    /// On the device where this backend has a tree for `c` (`gl_dot_chunks`: chunks of 2^8
    /// coefficients per thread, the chunks added here; see `coeffs_on_device`), else on the
    /// host.
    fn evaluate(&self, c: &Commitment, points: &[FE]) -> Result<Vec<Vec<FE>>> {
        let tree = self.coeffs_on_device(c)?;
        let Some(kept) = tree.as_deref().and_then(|t| t.coeffs.get()) else {
            return Ok(evaluate_coeffs(&host_coeffs(c)?, points));
        };
        let (n, width) = (1usize << c.degree_log, shape(c).width);
        let log_chunk = c.degree_log.min(DOT_CHUNK_BITS);
        let chunks = n >> log_chunk;
        let (log_n, batch, log_chunk32) = (small(c.degree_log)?, small(width)?, small(log_chunk)?);
        points
            .iter()
            .map(|&x| {
                let powers: Vec<u64> = x.powers().take(n).flat_map(ext_words).collect();
                let powers = self.up(&powers)?;
                let mut out = self.dev.alloc_zeros(2 * width * chunks)?;
                // SAFETY: `kept` holds `width × n` coefficients and `powers` 2n words; thread t
                // reads its chunk of 2^log_chunk of them and writes out[2t], out[2t + 1], below
                // 2·width·chunks.
                unsafe {
                    self.launch(
                        &self.dot_chunks,
                        width * chunks,
                        &mut [
                            Arg::In(kept),
                            Arg::In(&powers),
                            Arg::U32(log_n),
                            Arg::U32(batch),
                            Arg::U32(log_chunk32),
                            Arg::Out(&mut out),
                        ],
                    )?;
                }
                let parts = self.down(&out)?;
                Ok(parts.chunks(2 * chunks).map(|p| p.chunks(2).map(ext_of).sum()).collect())
            })
            .collect()
    }

    /// On the device where this backend has a tree for `c` (`gl_combine`, a thread per
    /// coefficient), else on the host.
    fn combine(&self, c: &Commitment, indices: &[usize], powers: &[FE]) -> Result<Vec<FE>> {
        let tree = self.coeffs_on_device(c)?;
        let Some(kept) = tree.as_deref().and_then(|t| t.coeffs.get()) else {
            return combine_coeffs(&host_coeffs(c)?, indices, powers, 1 << c.degree_log);
        };
        let n = 1usize << c.degree_log;
        check_combination(shape(c).width, indices, powers)?;
        if indices.is_empty() {
            return Ok(vec![FE::ZERO; n]);
        }
        let words: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
        let (indices, powers) =
            (self.up(&words)?, self.up(&powers.iter().copied().flat_map(ext_words).collect::<Vec<_>>())?);
        let mut out = self.dev.alloc_zeros(2 * n)?;
        let (count, log_n) = (small(words.len())?, small(c.degree_log)?);
        // SAFETY: every index is below the commitment's width (checked above), so each read is
        // inside `kept`'s `width × n` coefficients; thread j writes out[2j], out[2j + 1].
        unsafe {
            self.launch(
                &self.combine,
                n,
                &mut [
                    Arg::In(kept),
                    Arg::In(&indices),
                    Arg::In(&powers),
                    Arg::U32(count),
                    Arg::U32(log_n),
                    Arg::Out(&mut out),
                ],
            )?;
        }
        Ok(self.down(&out)?.chunks(2).map(ext_of).collect())
    }

    fn read_coeffs(&self, c: &Commitment) -> Result<Vec<F>> {
        if let Ok(host) = host_coeffs(c) {
            return Ok(host.concat());
        }
        match self.coeffs_on_device(c)?.as_ref().and_then(|t| t.coeffs.get()) {
            Some(kept) => Ok(self.down(kept)?.into_iter().map(F::from_canonical_u64).collect()),
            None => Ok(host_coeffs(c)?.concat()),
        }
    }

    fn release(&self, tree: &Tree, shape: Shape) {
        self.resident.release(&TreeKey::of(tree, shape));
    }

    fn merkle_tree(&self, rows: &[F], width: usize, cap_height: usize) -> Result<(Vec<Digest>, Vec<Digest>)> {
        let leaves = tree_leaves(rows.len(), width, cap_height)?;
        let on_device = self.up_values(rows)?;
        let (digests, count, cap) = self.tree_on_device(&on_device, width, leaves, cap_height)?;
        Ok((self.digests_to_host(&digests, count)?, cap))
    }

    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let Some((f, args)) = self.quotient_launch(q)? else {
            return q.values_on_cpu_from(self);
        };
        let values = self.quotient_on_device(f, &args, q)?;
        Ok(self.down(&values)?.into_iter().map(F::from_canonical_u64).collect())
    }

    /// The values from the kernel, interpolated where they are: the inverse NTT as
    /// [`CudaBackend::commit_values_tree`] runs it, then the shift undone by the powers of
    /// `shift⁻¹` (`gl_scale_powers`); only the coefficients come back. Where the quotient runs on
    /// the CPU, [`crate::quotient::coeffs_from_values`].
    fn quotient_coeffs(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        let size = q.size();
        let launch = if size >= 2 { self.quotient_launch(q)? } else { None };
        let Some((f, args)) = launch else {
            return crate::quotient::coeffs_from_values(self, q);
        };
        let challenges = q.common.config.num_challenges;
        let mut values = self.quotient_on_device(f, &args, q)?;
        let dft = self.ntt_on_device(&mut values, size, challenges, F::ONE)?;
        drop(values);
        let mut coeffs = self.dev.alloc_zeros(challenges * size)?;
        let n_inv = F::inverse_2exp(size.trailing_zeros() as usize).to_canonical_u64();
        let unshift = self.powers_on_device(F::coset_shift().inverse(), size)?;
        let (log_size, challenges32) = (small(size.trailing_zeros() as usize)?, small(challenges)?);
        // SAFETY: `dft` and `coeffs` hold `challenges × size` elements and `unshift` `size`; each
        // kernel reads and writes within them.
        unsafe {
            self.launch(
                &self.intt_finish,
                challenges * size,
                &mut [
                    Arg::In(&dft),
                    Arg::Out(&mut coeffs),
                    Arg::U32(log_size),
                    Arg::U32(challenges32),
                    Arg::U64(n_inv),
                ],
            )?;
            self.launch(
                &self.scale,
                challenges * size,
                &mut [Arg::Out(&mut coeffs), Arg::In(unshift.as_ref()), Arg::U32(log_size), Arg::U32(challenges32)],
            )?;
        }
        drop(dft);
        Ok(self.down(&coeffs)?.into_iter().map(F::from_canonical_u64).collect())
    }

    fn grind(
        &self,
        state: &[F; WIDTH],
        slot: usize,
        min_leading_zeros: u32,
        start: u64,
        count: u64,
    ) -> Result<Option<u64>> {
        check_grind(slot, start, count)?;
        if count == 0 {
            return Ok(None);
        }
        let words = self.up_values(state)?;
        let mut best = self.up(&[u64::MAX])?;
        let threads = usize::try_from(count).map_err(|_| BackendError::Shape(format!("{count} candidates at once")))?;
        let slot = small(slot)?;
        // SAFETY: the kernel reads the 12 state words and writes `best` with atomicMin only.
        unsafe {
            self.launch(
                &self.grind,
                threads,
                &mut [
                    Arg::In(&words),
                    Arg::U32(slot),
                    Arg::U32(min_leading_zeros),
                    Arg::U64(start),
                    Arg::U64(count),
                    Arg::Out(&mut best),
                ],
            )?;
        }
        let best = self.down(&best)?;
        Ok(best.first().copied().filter(|&w| w != u64::MAX))
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        if width == 0 || rows.len() != width * out.len() {
            return Err(BackendError::Shape(format!("{} elements for {} rows of {width}", rows.len(), out.len())));
        }
        let input = self.up_values(rows)?;
        let mut res = self.dev.alloc_zeros(4 * out.len())?;
        let (w, count) = (small(width)?, small(out.len())?);
        // SAFETY: the kernel reads `count × width` and writes `4 × count` elements.
        unsafe {
            self.launch(
                &self.rows,
                out.len(),
                &mut [Arg::In(&input), Arg::U32(w), Arg::U32(count), Arg::Out(&mut res)],
            )?;
        }
        self.note_memory();
        self.download_digests(&res, out)
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        if children.len() != 2 * out.len() {
            return Err(BackendError::Shape(format!("{} children for {} parents", children.len(), out.len())));
        }
        let flat: Vec<u64> = children.iter().flat_map(|d| d.elements.map(|e| e.to_canonical_u64())).collect();
        let input = self.up(&flat)?;
        let mut res = self.dev.alloc_zeros(4 * out.len())?;
        let count = small(out.len())?;
        // SAFETY: the kernel reads `8 × count` and writes `4 × count` elements.
        unsafe {
            self.launch(&self.pairs, out.len(), &mut [Arg::In(&input), Arg::U32(count), Arg::Out(&mut res)])?;
        }
        self.download_digests(&res, out)
    }
}

//! The CUDA backend on cudarc: kernels are CUDA C in this folder, compiled by NVRTC when the
//! backend starts (once per process), with libcuda and libnvrtc loaded at run time, so every
//! build contains it and a machine without CUDA simply finds it unavailable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use plonky2::field::types::{Field, PrimeField64};
use plonky2::hash::poseidon::{Poseidon, ALL_ROUND_CONSTANTS};

use crate::backend::{Backend, Digest};
use crate::cpu::powers;
use crate::error::{BackendError, Result};
use crate::quotient::{QuotientInputs, QuotientKernelArgs};
use crate::F;

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

/// The tables of the fast partial rounds plonky2's Poseidon gate constrains (`PSN_MDS_0_0` and
/// `PSN_FAST_*`), for the quotient code only.
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
    format!("{}\n{}\n{}\n", strip(GOLDILOCKS), poseidon_prelude(device), strip(POSEIDON))
}

/// The batch kernels (`kernels.cu`) after the headers, as NVRTC compiles them.
pub fn kernels_source() -> String {
    format!("{}\n{}", headers(true), KERNELS)
}

/// The quotient code (`quotient.cuh`) after the headers: the `qt_values` kernel on the device,
/// `qt_values_host` on the host.
pub fn quotient_source(device: bool) -> String {
    format!("{}\n{}\n{}\n", headers(device), poseidon_fast_prelude(device), strip(QUOTIENT))
}

/// Whether the driver and NVRTC libraries can be loaded (cudarc panics on first use otherwise).
pub fn libraries_present() -> bool {
    // SAFETY: these only try to dlopen the libraries.
    unsafe { cudarc::driver::sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// The CUDA backend on one device.
pub struct CudaBackend {
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    scale: CudaFunction,
    bit_reverse: CudaFunction,
    stage: CudaFunction,
    rows: CudaFunction,
    pairs: CudaFunction,
    device: String,
    ctx: Arc<CudaContext>,
    /// Device memory in use when the backend started, and the most seen in use since.
    used_at_start: usize,
    peak_used: AtomicUsize,
    /// The quotient kernel, compiled on first use (it is large, and only our circuits' gates
    /// need it), or why it did not compile.
    quotient: OnceLock<std::result::Result<(Arc<CudaModule>, CudaFunction), String>>,
}

/// Threads per block of the quotient kernel: each thread holds a Poseidon state and the
/// α-accumulators, so fewer than the default 1024.
const QUOTIENT_BLOCK: u32 = 128;

fn cuda(e: impl std::fmt::Debug) -> BackendError {
    BackendError::Cuda(format!("{e:?}"))
}

fn to_u64(v: &[F]) -> Vec<u64> {
    v.iter().map(|x| x.to_canonical_u64()).collect()
}

fn cfg(n: usize) -> Result<LaunchConfig> {
    let n = u32::try_from(n).map_err(|_| BackendError::Shape(format!("{n} threads")))?;
    Ok(LaunchConfig::for_num_elems(n))
}

fn small(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| BackendError::Shape(format!("{n} does not fit a kernel argument")))
}

impl CudaBackend {
    /// Opens device `ordinal` and compiles the kernels, or says why it cannot.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !libraries_present() {
            return Err(BackendError::Unavailable("libcuda or libnvrtc not found".into()));
        }
        let count =
            CudaContext::device_count().map_err(|e| BackendError::Unavailable(format!("no CUDA driver: {e:?}")))?;
        if count <= ordinal as i32 {
            return Err(BackendError::Unavailable(format!("{count} CUDA devices")));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda)?;
        let device = ctx.name().map_err(cuda)?;
        let ptx =
            cudarc::nvrtc::compile_ptx(kernels_source()).map_err(|e| BackendError::Cuda(format!("NVRTC: {e:?}")))?;
        let module = ctx.load_module(ptx).map_err(cuda)?;
        let f = |name: &str| module.load_function(name).map_err(cuda);
        let (free, total) = ctx.mem_get_info().map_err(cuda)?;
        Ok(Self {
            used_at_start: total - free,
            peak_used: AtomicUsize::new(total - free),
            ctx: ctx.clone(),
            stream: ctx.default_stream(),
            scale: f("gl_scale_powers")?,
            bit_reverse: f("gl_bit_reverse")?,
            stage: f("gl_ntt_stage")?,
            rows: f("psn_hash_rows")?,
            pairs: f("psn_hash_pairs")?,
            _module: module,
            device,
            quotient: OnceLock::new(),
        })
    }

    /// Compiles the quotient kernel now, or says why it does not compile (otherwise the
    /// quotient quietly stays on the CPU, with one warning).
    pub fn quotient_kernel_ready(&self) -> Result<()> {
        self.quotient_kernel().map(|_| ()).map_err(|why| BackendError::Cuda(why.to_string()))
    }

    /// The quotient kernel, compiling it the first time.
    fn quotient_kernel(&self) -> std::result::Result<&CudaFunction, &str> {
        let compiled = self.quotient.get_or_init(|| {
            let ptx = cudarc::nvrtc::compile_ptx(quotient_source(true)).map_err(|e| format!("NVRTC: {e:?}"))?;
            let module = self.ctx.load_module(ptx).map_err(|e| format!("{e:?}"))?;
            let f = module.load_function("qt_values").map_err(|e| format!("{e:?}"))?;
            Ok((module, f))
        });
        match compiled {
            Ok((_, f)) => Ok(f),
            Err(why) => Err(why.as_str()),
        }
    }

    /// The quotient values on the device from packed arguments.
    fn quotient_on_device(&self, f: &CudaFunction, a: &QuotientKernelArgs, challenges: usize) -> Result<Vec<F>> {
        let s = &self.stream;
        let words = QuotientKernelArgs::words;
        let shape = s.clone_htod(&a.shape).map_err(cuda)?;
        let gates = s.clone_htod(&a.gates).map_err(cuda)?;
        let params = s.clone_htod(&words(&a.params)).map_err(cuda)?;
        let cs = s.clone_htod(&words(&a.constants_sigmas)).map_err(cuda)?;
        let wires = s.clone_htod(&words(&a.wires)).map_err(cuda)?;
        let zs = s.clone_htod(&words(&a.zs)).map_err(cuda)?;
        let xs = s.clone_htod(&words(&a.xs)).map_err(cuda)?;
        let l0s = s.clone_htod(&words(&a.l0s)).map_err(cuda)?;
        let zh_inv = s.clone_htod(&words(&a.zh_inv)).map_err(cuda)?;
        let mut out = s.alloc_zeros::<u64>(challenges * a.size).map_err(cuda)?;
        let size = a.size as u64;
        let blocks = u32::try_from(a.size.div_ceil(QUOTIENT_BLOCK as usize))
            .map_err(|_| BackendError::Shape(format!("{} quotient points", a.size)))?;
        let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (QUOTIENT_BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: `QuotientKernelArgs` is checked against its shape when made, and the kernel
        // reads within the shape and writes `challenges × size` values.
        unsafe {
            s.launch_builder(f)
                .arg(&shape)
                .arg(&gates)
                .arg(&params)
                .arg(&cs)
                .arg(&wires)
                .arg(&zs)
                .arg(&xs)
                .arg(&l0s)
                .arg(&zh_inv)
                .arg(&size)
                .arg(&mut out)
                .launch(config)
                .map_err(cuda)?;
        }
        self.note_memory();
        let v = s.clone_dtoh(&out).map_err(cuda)?;
        Ok(v.into_iter().map(F::from_canonical_u64).collect())
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device
    }

    /// Samples the device's memory in use (called while a kernel's buffers are allocated).
    fn note_memory(&self) {
        if let Ok((free, total)) = self.ctx.mem_get_info() {
            self.peak_used.fetch_max(total - free, Ordering::Relaxed);
        }
    }

    fn download_digests(&self, res: &cudarc::driver::CudaSlice<u64>, out: &mut [Digest]) -> Result<()> {
        let v = self.stream.clone_dtoh(res).map_err(cuda)?;
        for (o, c) in out.iter_mut().zip(v.chunks(4)) {
            o.elements = std::array::from_fn(|i| F::from_canonical_u64(c[i]));
        }
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        Some(self.peak_used.load(Ordering::Relaxed).saturating_sub(self.used_at_start) as u64)
    }

    fn coset_ntt_batch(&self, data: &mut [F], n: usize, shift: F) -> Result<()> {
        if n < 2 || !n.is_power_of_two() || !data.len().is_multiple_of(n) {
            return Err(BackendError::Shape(format!("{} elements in polynomials of {n}", data.len())));
        }
        let batch = data.len() / n;
        let log_n = n.trailing_zeros() as usize;
        let s = &self.stream;
        let mut a = s.clone_htod(&to_u64(data)).map_err(cuda)?;
        let mut b = s.alloc_zeros::<u64>(data.len()).map_err(cuda)?;
        let shifts = s.clone_htod(&to_u64(&powers(shift, n))).map_err(cuda)?;
        let twiddles = s.clone_htod(&to_u64(&powers(F::primitive_root_of_unity(log_n), n / 2))).map_err(cuda)?;
        let (n32, batch32, log32) = (small(n)?, small(batch)?, small(log_n)?);
        // SAFETY: every kernel checks its index against the sizes passed with the buffers.
        unsafe {
            s.launch_builder(&self.scale)
                .arg(&mut a)
                .arg(&shifts)
                .arg(&n32)
                .arg(&batch32)
                .launch(cfg(data.len())?)
                .map_err(cuda)?;
            s.launch_builder(&self.bit_reverse)
                .arg(&a)
                .arg(&mut b)
                .arg(&log32)
                .arg(&batch32)
                .launch(cfg(data.len())?)
                .map_err(cuda)?;
            let mut half = 1usize;
            while half < n {
                let (h, stride) = (small(half)?, small(n / (2 * half))?);
                s.launch_builder(&self.stage)
                    .arg(&mut b)
                    .arg(&twiddles)
                    .arg(&log32)
                    .arg(&batch32)
                    .arg(&h)
                    .arg(&stride)
                    .launch(cfg(data.len() / 2)?)
                    .map_err(cuda)?;
                half *= 2;
            }
        }
        self.note_memory();
        let out = s.clone_dtoh(&b).map_err(cuda)?;
        for (d, v) in data.iter_mut().zip(out) {
            *d = F::from_canonical_u64(v);
        }
        Ok(())
    }

    fn quotient_values(&self, q: &QuotientInputs<'_>) -> Result<Vec<F>> {
        // The kernel first: packing the arguments copies every commitment's leaves, which is
        // wasted if the quotient ends up on the CPU anyway.
        let f = match self.quotient_kernel() {
            Ok(f) => f,
            Err(why) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!("the quotient kernel did not compile, so the quotient runs on the CPU: {why}")
                });
                return q.values_on_cpu();
            }
        };
        match q.kernel_args() {
            Ok(args) => self.quotient_on_device(f, &args, q.common.config.num_challenges),
            Err(BackendError::Unsupported(why)) => {
                tracing::debug!("quotient on the CPU: {why}");
                q.values_on_cpu()
            }
            Err(e) => Err(e),
        }
    }

    fn hash_rows(&self, rows: &[F], width: usize, out: &mut [Digest]) -> Result<()> {
        if width == 0 || rows.len() != width * out.len() {
            return Err(BackendError::Shape(format!("{} elements for {} rows of {width}", rows.len(), out.len())));
        }
        let s = &self.stream;
        let input = s.clone_htod(&to_u64(rows)).map_err(cuda)?;
        let mut res = s.alloc_zeros::<u64>(4 * out.len()).map_err(cuda)?;
        let (w, count) = (small(width)?, small(out.len())?);
        // SAFETY: the kernel reads `count × width` and writes `4 × count` elements.
        unsafe {
            s.launch_builder(&self.rows)
                .arg(&input)
                .arg(&w)
                .arg(&count)
                .arg(&mut res)
                .launch(cfg(out.len())?)
                .map_err(cuda)?;
        }
        self.note_memory();
        self.download_digests(&res, out)
    }

    fn hash_pairs(&self, children: &[Digest], out: &mut [Digest]) -> Result<()> {
        if children.len() != 2 * out.len() {
            return Err(BackendError::Shape(format!("{} children for {} parents", children.len(), out.len())));
        }
        let s = &self.stream;
        let flat: Vec<u64> = children.iter().flat_map(|d| d.elements.map(|e| e.to_canonical_u64())).collect();
        let input = s.clone_htod(&flat).map_err(cuda)?;
        let mut res = s.alloc_zeros::<u64>(4 * out.len()).map_err(cuda)?;
        let count = small(out.len())?;
        // SAFETY: the kernel reads `8 × count` and writes `4 × count` elements.
        unsafe {
            s.launch_builder(&self.pairs)
                .arg(&input)
                .arg(&count)
                .arg(&mut res)
                .launch(cfg(out.len())?)
                .map_err(cuda)?;
        }
        self.download_digests(&res, out)
    }
}

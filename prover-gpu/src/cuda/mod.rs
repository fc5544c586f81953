//! The CUDA backend on cudarc: kernels are CUDA C in this folder, compiled by NVRTC when the
//! backend starts (once per process), with libcuda and libnvrtc loaded at run time, so every
//! build contains it and a machine without CUDA simply finds it unavailable.

use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use plonky2::field::types::{Field, PrimeField64};
use plonky2::hash::poseidon::{Poseidon, ALL_ROUND_CONSTANTS};

use crate::backend::{Backend, Digest};
use crate::cpu::powers;
use crate::error::{BackendError, Result};
use crate::F;

const GOLDILOCKS: &str = include_str!("goldilocks.cuh");
const POSEIDON: &str = include_str!("poseidon.cuh");
const KERNELS: &str = include_str!("kernels.cu");

/// plonky2's Poseidon tables as C arrays (`PSN_RC`, `PSN_MDS_CIRC`, `PSN_MDS_DIAG`), prepended
/// to the kernels and to the host test harness.
pub fn poseidon_prelude(device: bool) -> String {
    let q = if device { "__device__ static const unsigned long long" } else { "static const u64" };
    let mut s = String::new();
    let list = |v: &[u64]| v.iter().map(|x| format!("{x}ULL")).collect::<Vec<_>>().join(",");
    let _ = writeln!(s, "{q} PSN_RC[{}] = {{{}}};", ALL_ROUND_CONSTANTS.len(), list(&ALL_ROUND_CONSTANTS));
    let _ = writeln!(s, "{q} PSN_MDS_CIRC[12] = {{{}}};", list(&<F as Poseidon>::MDS_MATRIX_CIRC));
    let _ = writeln!(s, "{q} PSN_MDS_DIAG[12] = {{{}}};", list(&<F as Poseidon>::MDS_MATRIX_DIAG));
    s
}

/// The headers with their includes resolved, for a single translation unit.
pub fn headers(device: bool) -> String {
    let strip = |src: &str| {
        src.lines()
            .filter(|l| !l.starts_with("#include \"") && !l.starts_with("#pragma once"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!("{}\n{}\n{}\n", strip(GOLDILOCKS), poseidon_prelude(device), strip(POSEIDON))
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
}

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
        let src = format!("{}\n{}", headers(true), KERNELS);
        let ptx = cudarc::nvrtc::compile_ptx(src).map_err(|e| BackendError::Cuda(format!("NVRTC: {e:?}")))?;
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
        })
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

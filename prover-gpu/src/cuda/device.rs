//! What [`super::CudaBackend`] needs of a device: buffers of 64-bit words, copies both ways,
//! compiled kernels and their launches. [`Driver`] is a CUDA device through cudarc;
//! [`super::emulated::Emulated`] runs the same kernels, built by the host C++ compiler, on the
//! CPU, so that the backend's own code (its launches, their arguments and its buffer sizes) is
//! checked on machines without a GPU too.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::error::{BackendError, Result};

/// The two CUDA sources the backend compiles: the batch kernels at start-up, the quotient kernel
/// on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `kernels.cu` ([`super::kernels_source`]): [`super::KERNEL_FUNCTIONS`].
    Kernels,
    /// `quotient.cuh` ([`super::quotient_source`]): [`super::QUOTIENT_FUNCTION`].
    Quotient,
}

/// One argument of a kernel launch, in the kernel's parameter order: a buffer the kernel reads
/// (a `const` pointer in the CUDA source), a buffer it writes (a mutable pointer), or a scalar.
pub enum Arg<'a, B> {
    /// A buffer read only.
    In(&'a B),
    /// A buffer written (and maybe read).
    Out(&'a mut B),
    /// A `u32` (`u32` in the source).
    U32(u32),
    /// A `u64` (`u64` in the source).
    U64(u64),
}

/// What the driver says of one compiled function.
#[derive(Clone, Copy, Debug)]
pub struct FunctionAttributes {
    /// The most threads per block the compiled function can run.
    pub max_threads_per_block: i32,
    /// Registers per thread.
    pub registers: i32,
    /// Local memory per thread, in bytes.
    pub local_bytes: i32,
}

/// A buffer of 64-bit words on a device.
pub trait DeviceBuffer: Send + Sync {
    /// Its length in words.
    fn len(&self) -> usize;
    /// Whether it has no words.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeviceBuffer for CudaSlice<u64> {
    fn len(&self) -> usize {
        CudaSlice::len(self)
    }
}

/// A device the CUDA backend runs on. Work is ordered as it is issued (one stream): a download
/// sees every launch before it.
pub trait Device: Send + Sync + Sized + 'static {
    /// The backend's name on this device ([`crate::Backend::name`]).
    const BACKEND: &'static str;
    /// A buffer of 64-bit words on the device.
    type Buffer: DeviceBuffer;
    /// A compiled source.
    type Module: Send + Sync;
    /// One kernel of a module.
    type Function: Send + Sync;

    /// The device's name.
    fn name(&self) -> Result<String>;
    /// Compiles one of the sources.
    fn compile(&self, source: Source) -> Result<Self::Module>;
    /// The kernel `name` of `module`.
    fn function(&self, module: &Self::Module, name: &'static str) -> Result<Self::Function>;
    /// The most threads per block the compiled function can run.
    fn max_threads_per_block(&self, f: &Self::Function) -> Result<i32>;
    /// What the compiled function allows and uses.
    fn attributes(&self, f: &Self::Function) -> Result<FunctionAttributes>;
    /// Free and total device memory, in bytes.
    fn memory(&self) -> Result<(usize, usize)>;
    /// A new buffer of `len` zero words.
    fn alloc_zeros(&self, len: usize) -> Result<Self::Buffer>;
    /// `words` in a new buffer.
    fn upload(&self, words: &[u64]) -> Result<Self::Buffer>;
    /// A buffer's words on the host, once the launches before it are done.
    fn download(&self, buffer: &Self::Buffer) -> Result<Vec<u64>>;
    /// Launches `f` (named `name`) on `blocks` blocks of `threads` threads.
    ///
    /// # Safety
    /// The arguments must be the kernel's parameters, in order, and the kernel must read and
    /// write only inside the buffers given for the sizes given.
    unsafe fn launch(
        &self,
        f: &Self::Function,
        name: &'static str,
        blocks: u32,
        threads: u32,
        args: &mut [Arg<'_, Self::Buffer>],
    ) -> Result<()>;
}

fn cuda(e: impl std::fmt::Debug) -> BackendError {
    BackendError::Cuda(format!("{e:?}"))
}

/// A CUDA device through cudarc, its kernels compiled by NVRTC, its work on the context's
/// default stream.
pub struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl Driver {
    /// Opens device `ordinal`, or says why it cannot (no libraries, no driver, no such device).
    pub fn new(ordinal: usize) -> Result<Self> {
        if !super::libraries_present() {
            return Err(BackendError::Unavailable("libcuda or libnvrtc not found".into()));
        }
        let count =
            CudaContext::device_count().map_err(|e| BackendError::Unavailable(format!("no CUDA driver: {e:?}")))?;
        if count <= ordinal as i32 {
            return Err(BackendError::Unavailable(format!("{count} CUDA devices")));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda)?;
        Ok(Self { stream: ctx.default_stream(), ctx })
    }
}

impl Device for Driver {
    const BACKEND: &'static str = "cuda";
    type Buffer = CudaSlice<u64>;
    type Module = Arc<CudaModule>;
    type Function = CudaFunction;

    fn name(&self) -> Result<String> {
        self.ctx.name().map_err(cuda)
    }

    fn compile(&self, source: Source) -> Result<Self::Module> {
        let src = match source {
            Source::Kernels => super::kernels_source(),
            Source::Quotient => super::quotient_source(true),
        };
        let ptx = cudarc::nvrtc::compile_ptx(src).map_err(|e| BackendError::Cuda(format!("NVRTC: {e:?}")))?;
        self.ctx.load_module(ptx).map_err(cuda)
    }

    fn function(&self, module: &Self::Module, name: &'static str) -> Result<Self::Function> {
        module.load_function(name).map_err(cuda)
    }

    fn max_threads_per_block(&self, f: &Self::Function) -> Result<i32> {
        f.max_threads_per_block().map_err(cuda)
    }

    fn attributes(&self, f: &Self::Function) -> Result<FunctionAttributes> {
        Ok(FunctionAttributes {
            max_threads_per_block: f.max_threads_per_block().map_err(cuda)?,
            registers: f.num_regs().map_err(cuda)?,
            local_bytes: f.local_size_bytes().map_err(cuda)?,
        })
    }

    fn memory(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(cuda)
    }

    fn alloc_zeros(&self, len: usize) -> Result<Self::Buffer> {
        self.stream.alloc_zeros::<u64>(len).map_err(cuda)
    }

    fn upload(&self, words: &[u64]) -> Result<Self::Buffer> {
        self.stream.clone_htod(words).map_err(cuda)
    }

    fn download(&self, buffer: &Self::Buffer) -> Result<Vec<u64>> {
        self.stream.clone_dtoh(buffer).map_err(cuda)
    }

    unsafe fn launch(
        &self,
        f: &Self::Function,
        _name: &'static str,
        blocks: u32,
        threads: u32,
        args: &mut [Arg<'_, Self::Buffer>],
    ) -> Result<()> {
        let mut builder = self.stream.launch_builder(f);
        for arg in args.iter_mut() {
            match arg {
                Arg::In(b) => builder.arg(*b),
                Arg::Out(b) => builder.arg(&mut **b),
                Arg::U32(v) => builder.arg(&*v),
                Arg::U64(v) => builder.arg(&*v),
            };
        }
        let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the caller's contract (the arguments are the kernel's, in order, and it stays
        // inside its buffers).
        unsafe { builder.launch(config) }.map(|_| ()).map_err(cuda)
    }
}

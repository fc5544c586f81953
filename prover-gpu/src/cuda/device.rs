//! What [`super::CudaBackend`] needs of a device: buffers of 64-bit words, copies both ways,
//! compiled kernels and their launches. [`Driver`] is a CUDA device through cudarc;
//! [`super::emulated::Emulated`] runs the same kernels, built by the host C++ compiler, on the
//! CPU, so that the backend's own code (its launches, their arguments and its buffer sizes) is
//! checked on machines without a GPU too.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A device the CUDA backend runs on. Work is ordered by the buffers it uses: a launch or a
/// download sees every launch and copy issued before it that wrote one of its buffers, from any
/// thread (one stream, or one per thread with events between them: [`Streams`]), and a buffer is
/// freed only once the work issued on it is done.
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
    /// How many streams the device's work goes to.
    fn streams(&self) -> usize;
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

/// Which CUDA streams a [`Driver`] issues work to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streams {
    /// The context's default stream: every thread's work in one queue, in the order issued.
    One,
    /// This many streams, each thread on one of them, threads taking them in turn as they first
    /// use the device: workers proving at once overlap one's copies with another's kernels, and
    /// one's small launches with another's. cudarc's events order the work across streams by
    /// the buffers it uses.
    PerThread(NonZeroUsize),
}

impl Streams {
    /// The environment variable that sets it: `1` for [`Streams::One`], `n` > 1 for `n` streams.
    pub const VAR: &'static str = "ROLLUP_CUDA_STREAMS";

    /// Streams when [`Self::VAR`] does not say: one per worker up to eight workers.
    pub const DEFAULT: Self = Self::PerThread(NonZeroUsize::new(8).expect("not zero"));

    /// From [`Self::VAR`], or [`Self::DEFAULT`] when it is not set.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::VAR) {
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::DEFAULT),
            Err(e) => Err(BackendError::Config(format!("{}: {e}", Self::VAR))),
        }
    }

    /// The number of streams.
    pub fn count(self) -> usize {
        match self {
            Self::One => 1,
            Self::PerThread(n) => n.get(),
        }
    }
}

impl std::str::FromStr for Streams {
    type Err = BackendError;

    /// `1` is [`Streams::One`], `n` from 2 to 64 is `n` streams per thread.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().parse::<usize>() {
            Ok(1) => Ok(Self::One),
            Ok(n @ 2..=64) => Ok(Self::PerThread(NonZeroUsize::new(n).expect("at least 2"))),
            _ => Err(BackendError::Config(format!("{}={s:?}: a number of CUDA streams from 1 to 64", Self::VAR))),
        }
    }
}

/// How a host thread waits for the device (a download, a synchronisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waits {
    /// The driver's choice (`CU_CTX_SCHED_AUTO`): with fewer contexts than cores, as a prover
    /// has, it spins, so a worker waiting on its proof's kernels keeps a core busy.
    Driver,
    /// The waiting thread sleeps until the device is done (`CU_CTX_SCHED_BLOCKING_SYNC`): its
    /// core is free for the other workers' host steps (their witness generation, above all), at
    /// the cost of a wake-up per wait.
    Block,
}

impl Waits {
    /// The environment variable that sets it: `driver` (the default) or `block`.
    pub const VAR: &'static str = "ROLLUP_CUDA_SYNC";

    /// From [`Self::VAR`], or [`Waits::Driver`] when it is not set.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::VAR) {
            Ok(v) => v.parse(),
            Err(std::env::VarError::NotPresent) => Ok(Self::Driver),
            Err(e) => Err(BackendError::Config(format!("{}: {e}", Self::VAR))),
        }
    }
}

impl std::str::FromStr for Waits {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "driver" => Ok(Self::Driver),
            "block" => Ok(Self::Block),
            _ => Err(BackendError::Config(format!("{}={s:?}: `driver` or `block`", Self::VAR))),
        }
    }
}

/// Threads that have used a [`Driver`] so far: each thread's stream is its number, counted here
/// when it first asks, modulo the streams.
static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's number among the threads that have used a driver.
fn thread_number() -> usize {
    THREAD.with(|t| match t.get() {
        Some(n) => n,
        None => {
            let n = THREADS.fetch_add(1, Ordering::Relaxed);
            t.set(Some(n));
            n
        }
    })
}

/// How many CUDA devices the driver sees: 0 where libcuda or libnvrtc is missing or no driver
/// answers.
pub fn device_count() -> usize {
    if !super::libraries_present() {
        return 0;
    }
    CudaContext::device_count().ok().and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
}

/// Whether device `ordinal` is among the `count` the driver sees. None at all is
/// [`BackendError::Unavailable`] (`--backend auto` then proves on the CPU); a device number past
/// the last of several is a [`BackendError::Config`] error, never a fallback: a prover meant for
/// GPU 3 of a machine with two must not quietly prove on the CPU, or on another process's GPU.
fn check_ordinal(count: usize, ordinal: usize) -> Result<()> {
    match count {
        0 => Err(BackendError::Unavailable("the CUDA driver sees no device".into())),
        _ if ordinal >= count => Err(BackendError::Config(format!(
            "CUDA device {ordinal} asked for, and this machine has {count} (0 to {}; CUDA numbers them fastest \
             first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, and only those CUDA_VISIBLE_DEVICES lists)",
            count - 1
        ))),
        _ => Ok(()),
    }
}

/// A CUDA device through cudarc, its kernels compiled by NVRTC, its work on the streams
/// [`Streams`] says.
pub struct Driver {
    ctx: Arc<CudaContext>,
    streams: Vec<Arc<CudaStream>>,
    waits: Waits,
}

impl Driver {
    /// Opens device `ordinal` with `streams`, its threads waiting as [`Waits::from_env`] says, or
    /// says why it cannot (no libraries, no driver, no such device, a bad setting).
    pub fn new(ordinal: usize, streams: Streams) -> Result<Self> {
        let waits = Waits::from_env()?;
        if !super::libraries_present() {
            return Err(BackendError::Unavailable("libcuda or libnvrtc not found".into()));
        }
        let count =
            CudaContext::device_count().map_err(|e| BackendError::Unavailable(format!("no CUDA driver: {e:?}")))?;
        check_ordinal(usize::try_from(count).unwrap_or(0), ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(cuda)?;
        if waits == Waits::Block {
            // `cuCtxSetFlags` on the primary context (a CUDA 12.1 driver or later).
            ctx.set_blocking_synchronize().map_err(cuda)?;
        }
        let streams = match streams {
            Streams::One => vec![ctx.default_stream()],
            // Creating a stream turns on cudarc's events: every launch and copy then makes its
            // stream wait for the last write to each buffer it uses, and records its own use.
            Streams::PerThread(n) => (0..n.get()).map(|_| ctx.new_stream().map_err(cuda)).collect::<Result<_>>()?,
        };
        Ok(Self { ctx, streams, waits })
    }

    /// How its threads wait for the device.
    pub fn waits(&self) -> Waits {
        self.waits
    }

    /// The calling thread's stream.
    fn stream(&self) -> &Arc<CudaStream> {
        match self.streams.as_slice() {
            [one] => one,
            all => &all[thread_number() % all.len()],
        }
    }

    /// Marks `b` as used on `stream`: see [`DriverBuffer`].
    fn touch(b: &DriverBuffer, stream: &Arc<CudaStream>) {
        if !Arc::ptr_eq(b.slice.stream(), stream) {
            b.crossed.store(true, Ordering::Relaxed);
        }
    }
}

/// A buffer on a [`Driver`]'s device. cudarc frees a buffer on the stream it was made on once
/// the last write to it and the last read of it are done; but it keeps one read event, the
/// latest stream's, so a buffer read on two streams at once could be freed while the first
/// still reads it. Those shared buffers (a circuit's constants and sigmas, the twiddles, the
/// quotient coset's points: read by every worker) are the only ones used off the stream that
/// made them, and are freed rarely (evicted from the cache, or with the backend): such a buffer
/// waits for all the device's work before it goes.
pub struct DriverBuffer {
    slice: CudaSlice<u64>,
    /// Used on a stream other than the one it was made on.
    crossed: AtomicBool,
}

impl DriverBuffer {
    fn new(slice: CudaSlice<u64>) -> Self {
        Self { slice, crossed: AtomicBool::new(false) }
    }
}

impl Drop for DriverBuffer {
    fn drop(&mut self) {
        if self.crossed.load(Ordering::Relaxed) {
            // An error here is the context's (recorded by cudarc and returned by its next call);
            // the buffer is freed after it either way.
            let _ = self.slice.stream().context().synchronize();
        }
    }
}

impl DeviceBuffer for DriverBuffer {
    fn len(&self) -> usize {
        self.slice.len()
    }
}

impl Device for Driver {
    const BACKEND: &'static str = "cuda";
    type Buffer = DriverBuffer;
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

    fn streams(&self) -> usize {
        self.streams.len()
    }

    fn alloc_zeros(&self, len: usize) -> Result<Self::Buffer> {
        self.stream().alloc_zeros::<u64>(len).map(DriverBuffer::new).map_err(cuda)
    }

    fn upload(&self, words: &[u64]) -> Result<Self::Buffer> {
        self.stream().clone_htod(words).map(DriverBuffer::new).map_err(cuda)
    }

    /// To pageable host memory, so the copy is done when the call returns (CUDA's rule for
    /// device-to-pageable copies), after the work its stream waits for.
    fn download(&self, buffer: &Self::Buffer) -> Result<Vec<u64>> {
        let stream = self.stream();
        Self::touch(buffer, stream);
        stream.clone_dtoh(&buffer.slice).map_err(cuda)
    }

    unsafe fn launch(
        &self,
        f: &Self::Function,
        _name: &'static str,
        blocks: u32,
        threads: u32,
        args: &mut [Arg<'_, Self::Buffer>],
    ) -> Result<()> {
        let stream = self.stream();
        let mut builder = stream.launch_builder(f);
        for arg in args.iter_mut() {
            match arg {
                Arg::In(b) => {
                    Self::touch(b, stream);
                    builder.arg(&b.slice)
                }
                Arg::Out(b) => {
                    Self::touch(b, stream);
                    builder.arg(&mut b.slice)
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_parse_from_one_to_sixty_four_and_refuse_the_rest() {
        assert_eq!("1".parse::<Streams>().expect("one"), Streams::One);
        assert_eq!(" 4 ".parse::<Streams>().expect("four"), Streams::PerThread(NonZeroUsize::new(4).expect("4")));
        assert_eq!("64".parse::<Streams>().expect("most").count(), 64);
        for bad in ["0", "65", "-1", "two", "", "1.5"] {
            let err = bad.parse::<Streams>().expect_err(bad);
            assert!(matches!(err, BackendError::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains(Streams::VAR), "{err}");
        }
        assert_eq!(Streams::DEFAULT.count(), 8);
    }

    #[test]
    fn waits_parse_as_driver_or_block_and_refuse_the_rest() {
        assert_eq!("driver".parse::<Waits>().expect("driver"), Waits::Driver);
        assert_eq!(" block ".parse::<Waits>().expect("block"), Waits::Block);
        for bad in ["", "spin", "Block", "1"] {
            let err = bad.parse::<Waits>().expect_err(bad);
            assert!(matches!(err, BackendError::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains(Waits::VAR), "{err}");
        }
    }

    #[test]
    fn a_device_past_the_last_is_a_setting_error_and_no_device_is_unavailable() {
        assert!(check_ordinal(1, 0).is_ok());
        assert!(check_ordinal(8, 7).is_ok());
        assert!(matches!(check_ordinal(0, 0), Err(BackendError::Unavailable(_))));
        assert!(matches!(check_ordinal(0, 3), Err(BackendError::Unavailable(_))));
        for (count, ordinal) in [(1, 1), (2, 3), (8, 8)] {
            let err = check_ordinal(count, ordinal).expect_err("past the last");
            assert!(matches!(err, BackendError::Config(_)), "{err}");
            let text = err.to_string();
            assert!(text.contains(&format!("device {ordinal}")) && text.contains(&format!("has {count}")), "{text}");
        }
    }

    #[test]
    fn each_thread_keeps_its_number_and_threads_take_new_ones() {
        let mine = thread_number();
        assert_eq!(thread_number(), mine, "a thread keeps its stream");
        let others: Vec<usize> = (0..4).map(|_| std::thread::spawn(thread_number).join().expect("thread")).collect();
        let mut all = others.clone();
        all.push(mine);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5, "every thread its own number: {others:?} and {mine}");
    }
}

//! The CUDA backend's kernels on the CPU: each source built by the host C++ compiler under CUDA
//! stubs into a shared library, each kernel an ordinary function called once per thread of its
//! grid (blocks in parallel on rayon). `CudaBackend<Emulated>` is then the CUDA backend's own
//! code (every launch, its arguments, every buffer and copy) over the kernels, checkable on
//! any machine with a C++ compiler: its tests run the device tests' bodies through it.
//!
//! Beyond what a device checks:
//! - each launch's arguments are checked against the kernel's parameters: a buffer read for a
//!   `const` pointer, a buffer written for a mutable one, a `u32` or a `u64` for a scalar of
//!   that size (on a device a wrong argument is silent);
//! - each buffer has guard words past its end, checked after every launch that writes it (a
//!   read past the end reads them, which changes what the tests compare wherever it is used);
//! - the threads of a launch run in orders that differ from block to block and from launch to
//!   launch of a kernel (see the trampolines below), so a result that depends on the order of
//!   a launch's threads, which a device does not promise, differs between runs, and the tests'
//!   comparisons see it;
//! - an empty allocation and an empty grid are refused, as a device refuses them;
//! - the device's memory is [`EMULATED_MEMORY`] bytes, every buffer counted while it lives, so
//!   the backend's peak device memory is measured here exactly as it allocates on a device.
//!
//! Not checked here: what only a device has (registers, NVRTC, the driver's calls, its streams
//! and their ordering, timing). Each call's work is done when it returns: one stream.
//! It is slow: a test device, not a backend to prove with.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::device::{Arg, Device, DeviceBuffer, FunctionAttributes, Source};
use crate::error::{BackendError, Result};

/// The stubs that make CUDA C an ordinary C++ translation unit: the kernel qualifiers gone, the
/// thread and block indices per host thread, and the intrinsics the kernels use.
pub const CUDA_STUBS: &str = r#"
#define __CUDACC_RTC__ 1
#define __device__
#define __global__
#define __forceinline__ inline
struct DimStub { unsigned x, y, z; };
[[maybe_unused]] static thread_local DimStub blockIdx, blockDim, threadIdx, gridDim;
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    __extension__ typedef unsigned __int128 u128;
    return (unsigned long long)(((u128)a * b) >> 64);
}
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline unsigned long long atomicMin(unsigned long long *a, unsigned long long v) {
    unsigned long long old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
static inline unsigned long long __brevll(unsigned long long x) {
    x = ((x >> 1) & 0x5555555555555555ULL) | ((x & 0x5555555555555555ULL) << 1);
    x = ((x >> 2) & 0x3333333333333333ULL) | ((x & 0x3333333333333333ULL) << 2);
    x = ((x >> 4) & 0x0f0f0f0f0f0f0f0fULL) | ((x & 0x0f0f0f0f0f0f0f0fULL) << 4);
    return __builtin_bswap64(x);
}
"#;

/// After the source: for each kernel `K`, `pg_launch_K(first, last, threads, blocks, down, args)`
/// runs blocks `first .. last` of a grid of `blocks` blocks of `threads` threads, its arguments
/// as the driver takes them (an array of pointers to each). The blocks run upwards, or downwards
/// if `down`; an even block's threads run the same way as the blocks, an odd block's the other
/// way. A thread that reads what another thread of its block writes, unordered on a device,
/// then sees it written in some blocks or launches and not in others. `pg_signature_K()` spells its
/// parameters: `r` a `const` pointer, `w` a mutable one, `4` and `8` scalars of that size.
const TRAMPOLINES: &str = r#"
#include <cstddef>
#include <type_traits>
#include <utility>
template <typename... A, std::size_t... I>
static void pg_call(void (*f)(A...), void **args, std::index_sequence<I...>) {
    f(*static_cast<A *>(args[I])...);
}
template <typename... A>
static void pg_run(void (*f)(A...), unsigned first, unsigned last, unsigned threads, unsigned blocks, unsigned down,
                   void **args) {
    gridDim = DimStub{blocks, 1, 1};
    blockDim = DimStub{threads, 1, 1};
    for (unsigned j = first; j < last; j++) {
        unsigned b = down ? first + last - 1 - j : j;
        blockIdx = DimStub{b, 0, 0};
        bool threads_down = (b % 2 == 1) != (down != 0);
        for (unsigned k = 0; k < threads; k++) {
            threadIdx = DimStub{threads_down ? threads - 1 - k : k, 0, 0};
            pg_call(f, args, std::index_sequence_for<A...>{});
        }
    }
}
template <typename A>
constexpr char pg_kind() {
    return std::is_pointer<A>::value ? (std::is_const<typename std::remove_pointer<A>::type>::value ? 'r' : 'w')
                                     : (sizeof(A) == 4 ? '4' : sizeof(A) == 8 ? '8' : '?');
}
template <typename... A>
static const char *pg_signature(void (*)(A...)) {
    static const char s[] = {pg_kind<A>()..., 0};
    return s;
}
#define PG_EXPORT(K)                                                                                      \
    extern "C" void pg_launch_##K(unsigned first, unsigned last, unsigned threads, unsigned blocks,       \
                                  unsigned down, void **args) {                                           \
        pg_run(K, first, last, threads, blocks, down, args);                                              \
    }                                                                                                     \
    extern "C" const char *pg_signature_##K(void) { return pg_signature(K); }
"#;

/// The device memory the emulation models: an allocation past it fails, as on a 16 GiB device
/// (the issue's bound for the largest batch proof).
pub const EMULATED_MEMORY: usize = 16 << 30;

/// The most threads a block has on any CUDA device; a launch of more, or of no block or no
/// thread, is refused as a device refuses it.
const MAX_THREADS_PER_BLOCK: u32 = 1024;

/// Words after each buffer, set to [`GUARD_WORD`], and checked after every launch that writes
/// the buffer.
const GUARD_WORDS: usize = 8;
const GUARD_WORD: u64 = 0x5EED_DEAD_BEEF_5EED;

const _: () = assert!(cfg!(target_endian = "little"), "a u32 argument is passed as the low half of a word");

mod dl {
    use std::ffi::{c_char, c_int, c_void};

    pub const RTLD_NOW: c_int = 2;

    extern "C" {
        pub fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        pub fn dlerror() -> *const c_char;
    }
}

/// A loaded shared library of kernels (never unloaded: the process keeps one per source).
pub struct Library {
    handle: *mut c_void,
}

// SAFETY: the handle is only passed to dlsym, which is thread-safe.
unsafe impl Send for Library {}
// SAFETY: as above.
unsafe impl Sync for Library {}

type LaunchFn = unsafe extern "C" fn(u32, u32, u32, u32, u32, *const *mut c_void);
type SignatureFn = unsafe extern "C" fn() -> *const c_char;

/// A kernel of a [`Library`]: its grid runner and its parameters' kinds (`r`, `w`, `4`, `8`).
pub struct Function {
    launch: LaunchFn,
    signature: Vec<u8>,
}

/// A buffer in host memory, with guard words past its end, counted against the device's
/// memory while it lives.
pub struct HostBuffer {
    words: Vec<u64>,
    len: usize,
    used: Arc<AtomicUsize>,
}

impl HostBuffer {
    fn bytes(&self) -> usize {
        8 * self.len
    }

    fn guard_intact(&self) -> bool {
        self.words[self.len..].iter().all(|&w| w == GUARD_WORD)
    }
}

impl DeviceBuffer for HostBuffer {
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

/// The CUDA kernels on the CPU (see the module's documentation).
pub struct Emulated {
    used: Arc<AtomicUsize>,
    peak: AtomicUsize,
    /// What the backend asked of the device: launches by kernel, and copies.
    activity: Mutex<Activity>,
}

/// What the backend asked of an [`Emulated`] device since it was made: the work a GPU would be
/// given, for counting launches and copies (each a fixed cost on a device) per proof.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Launches and threads by kernel, in the order each kernel first ran.
    pub kernels: Vec<KernelActivity>,
    /// Buffers uploaded from the host.
    pub uploads: u64,
    /// Buffers downloaded to the host (each waits for the launches before it, on a device).
    pub downloads: u64,
}

/// One kernel's share of an [`Activity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelActivity {
    /// The kernel.
    pub name: &'static str,
    /// Its launches.
    pub launches: u64,
    /// Its threads over all its launches (whole blocks, as launched).
    pub threads: u64,
}

impl Activity {
    /// Launches of every kernel.
    pub fn launches(&self) -> u64 {
        self.kernels.iter().map(|k| k.launches).sum()
    }

    /// What happened between `earlier` (of the same device) and this.
    pub fn since(&self, earlier: &Activity) -> Activity {
        let before = |name| earlier.kernels.iter().find(|k| k.name == name);
        Activity {
            kernels: self
                .kernels
                .iter()
                .map(|k| {
                    let (launches, threads) = before(k.name).map_or((0, 0), |b| (b.launches, b.threads));
                    KernelActivity { name: k.name, launches: k.launches - launches, threads: k.threads - threads }
                })
                .filter(|k| k.launches > 0)
                .collect(),
            uploads: self.uploads - earlier.uploads,
            downloads: self.downloads - earlier.downloads,
        }
    }
}

impl Emulated {
    /// An emulated device with nothing allocated. The first compile of each source builds it
    /// with the host C++ compiler (`$CXX`, else `c++`), once per process.
    pub fn new() -> Self {
        Self { used: Arc::new(AtomicUsize::new(0)), peak: AtomicUsize::new(0), activity: Mutex::default() }
    }

    /// Bytes allocated now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What the backend asked of this device so far.
    pub fn activity(&self) -> Activity {
        self.activity.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn note<R>(&self, f: impl FnOnce(&mut Activity) -> R) -> R {
        f(&mut self.activity.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The most bytes allocated at once so far, at every allocation (the backend's
    /// [`crate::Backend::peak_device_bytes`] samples a device's use at chosen points only).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Default for Emulated {
    fn default() -> Self {
        Self::new()
    }
}

fn emulation(why: impl std::fmt::Display) -> BackendError {
    BackendError::Cuda(format!("emulation: {why}"))
}

/// The translation unit of `source`: the stubs, the CUDA source as NVRTC compiles it, and a
/// trampoline per kernel the backend loads from it.
fn translation_unit(source: Source) -> String {
    let (src, names): (String, Vec<&str>) = match source {
        Source::Kernels => (super::kernels_source(), super::KERNEL_FUNCTIONS.iter().map(|(n, _)| *n).collect()),
        Source::Quotient => (super::quotient_source(true), vec![super::QUOTIENT_FUNCTION.0]),
    };
    let exports: String = names.iter().map(|n| format!("PG_EXPORT({n})\n")).collect();
    format!("{CUDA_STUBS}\n{src}\n{TRAMPOLINES}\n{exports}")
}

/// Builds `source` into a shared library and loads it; the files are removed once loaded.
fn build(source: Source) -> std::result::Result<Library, String> {
    static BUILDS: AtomicUsize = AtomicUsize::new(0);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "prover-gpu-emulated-{}-{}",
        std::process::id(),
        BUILDS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cpp, so) = (dir.join("kernels.cpp"), dir.join("kernels.so"));
    let built = (|| {
        std::fs::write(&cpp, translation_unit(source)).map_err(|e| format!("{}: {e}", cpp.display()))?;
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args(["-std=c++17", "-O2", "-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&cpp)
            .output()
            .map_err(|e| format!("the host C++ compiler ({cxx}): {e}"))?;
        if !out.status.success() {
            return Err(format!("{cxx} rejects the {source:?} source:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
        let path = CString::new(so.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a library we just built, whose initialisers only set its static tables.
        let handle = unsafe { dl::dlopen(path.as_ptr(), dl::RTLD_NOW) };
        if handle.is_null() {
            // SAFETY: dlerror returns null or a C string valid until the next dl call here.
            let why = unsafe { dl::dlerror() };
            let why = if why.is_null() { "unknown".into() } else { unsafe { CStr::from_ptr(why) }.to_string_lossy() };
            return Err(format!("dlopen {}: {why}", so.display()));
        }
        Ok(Library { handle })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    built
}

/// A symbol of `lib`, or why not.
fn symbol(lib: &Library, name: &str) -> Result<*mut c_void> {
    let c = CString::new(name).map_err(emulation)?;
    // SAFETY: a live handle and a C string.
    let p = unsafe { dl::dlsym(lib.handle, c.as_ptr()) };
    if p.is_null() {
        return Err(emulation(format!("no symbol {name}")));
    }
    Ok(p)
}

/// A raw argument array sent to the rayon threads that run the blocks.
struct Args(Vec<*mut c_void>);
// SAFETY: the pointers are to the launch's arguments and buffers, alive for the whole launch,
// and the kernels' threads touch the buffers as a device's would (disjoint writes, atomics).
unsafe impl Send for Args {}
// SAFETY: as above.
unsafe impl Sync for Args {}

impl Device for Emulated {
    const BACKEND: &'static str = "cuda-emulated";
    type Buffer = HostBuffer;
    type Module = Arc<Library>;
    type Function = Function;

    fn name(&self) -> Result<String> {
        Ok("CUDA kernels emulated on the host CPU".into())
    }

    fn compile(&self, source: Source) -> Result<Self::Module> {
        type Built = std::result::Result<Arc<Library>, String>;
        static LIBRARIES: OnceLock<Mutex<HashMap<Source, Built>>> = OnceLock::new();
        let mut built = LIBRARIES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        built.entry(source).or_insert_with(|| build(source).map(Arc::new)).clone().map_err(emulation)
    }

    fn function(&self, module: &Self::Module, name: &'static str) -> Result<Self::Function> {
        let launch = symbol(module, &format!("pg_launch_{name}"))?;
        let signature = symbol(module, &format!("pg_signature_{name}"))?;
        // SAFETY: the trampolines of `TRAMPOLINES`, with these types.
        let (launch, signature) = unsafe {
            let signature: SignatureFn = std::mem::transmute::<*mut c_void, SignatureFn>(signature);
            (std::mem::transmute::<*mut c_void, LaunchFn>(launch), CStr::from_ptr(signature()).to_bytes().to_vec())
        };
        if signature.contains(&b'?') {
            return Err(emulation(format!("{name} takes a parameter of a size the backend never passes")));
        }
        Ok(Function { launch, signature })
    }

    /// A device's most, as a block may have on every CUDA device.
    fn max_threads_per_block(&self, _f: &Self::Function) -> Result<i32> {
        Ok(MAX_THREADS_PER_BLOCK as i32)
    }

    fn attributes(&self, _f: &Self::Function) -> Result<FunctionAttributes> {
        Err(BackendError::Unsupported("an emulated kernel has no registers or local memory".into()))
    }

    fn memory(&self) -> Result<(usize, usize)> {
        Ok((EMULATED_MEMORY.saturating_sub(self.used()), EMULATED_MEMORY))
    }

    /// One: each call's work is done when it returns.
    fn streams(&self) -> usize {
        1
    }

    fn alloc_zeros(&self, len: usize) -> Result<Self::Buffer> {
        if len == 0 {
            return Err(emulation("an allocation of zero bytes, which a device refuses"));
        }
        let bytes = 8 * len;
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > EMULATED_MEMORY {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(emulation(format!(
                "out of memory: {bytes} bytes asked with {before} of {EMULATED_MEMORY} in use"
            )));
        }
        self.peak.fetch_max(before + bytes, Ordering::Relaxed);
        let mut words = vec![0u64; len + GUARD_WORDS];
        words[len..].fill(GUARD_WORD);
        Ok(HostBuffer { words, len, used: self.used.clone() })
    }

    fn upload(&self, words: &[u64]) -> Result<Self::Buffer> {
        let mut b = self.alloc_zeros(words.len())?;
        b.words[..words.len()].copy_from_slice(words);
        self.note(|a| a.uploads += 1);
        Ok(b)
    }

    fn download(&self, buffer: &Self::Buffer) -> Result<Vec<u64>> {
        self.note(|a| a.downloads += 1);
        Ok(buffer.words[..buffer.len].to_vec())
    }

    unsafe fn launch(
        &self,
        f: &Self::Function,
        name: &'static str,
        blocks: u32,
        threads: u32,
        args: &mut [Arg<'_, Self::Buffer>],
    ) -> Result<()> {
        if blocks == 0 || threads == 0 || threads > MAX_THREADS_PER_BLOCK {
            return Err(emulation(format!("{name} launched on {blocks} blocks of {threads} threads")));
        }
        if args.len() != f.signature.len() {
            return Err(emulation(format!("{name} takes {} arguments, given {}", f.signature.len(), args.len())));
        }
        // One word per argument: a buffer's address, or a scalar (a u32 read as the low half).
        let mut slots = Vec::with_capacity(args.len());
        for (i, (arg, &kind)) in args.iter_mut().zip(&f.signature).enumerate() {
            let (given, word) = match arg {
                Arg::In(b) => ('r', b.words.as_ptr() as u64),
                Arg::Out(b) => ('w', b.words.as_mut_ptr() as u64),
                Arg::U32(v) => ('4', u64::from(*v)),
                Arg::U64(v) => ('8', *v),
            };
            if given as u8 != kind {
                return Err(emulation(format!(
                    "argument {i} of {name}: given '{given}', the kernel takes '{}' \
                     (r: const pointer, w: pointer, 4: u32, 8: u64)",
                    kind as char
                )));
            }
            slots.push(word);
        }
        // The kernel's launches before this one: every other one runs its blocks downwards.
        let earlier = self.note(|a| {
            let threads = u64::from(blocks) * u64::from(threads);
            match a.kernels.iter_mut().find(|k| k.name == name) {
                Some(k) => {
                    k.launches += 1;
                    k.threads += threads;
                    k.launches - 1
                }
                None => {
                    a.kernels.push(KernelActivity { name, launches: 1, threads });
                    0
                }
            }
        });
        let down = (earlier % 2) as u32;
        let pointers = Args(slots.iter_mut().map(|w| w as *mut u64 as *mut c_void).collect());
        // Chunks of blocks, a few per rayon thread.
        let per = (blocks as usize).div_ceil(4 * rayon::current_num_threads()).max(1) as u32;
        let launch = f.launch;
        (0..blocks.div_ceil(per)).into_par_iter().for_each(|c| {
            let (first, last) = (c * per, ((c + 1) * per).min(blocks));
            let args = &pointers;
            // SAFETY: the trampoline takes an array of pointers to each argument, checked above
            // to be of the kernel's kinds; the caller's contract keeps the kernel in its buffers.
            unsafe { launch(first, last, threads, blocks, down, args.0.as_ptr()) };
        });
        for (i, arg) in args.iter().enumerate() {
            if let Arg::Out(b) = arg {
                if !b.guard_intact() {
                    return Err(emulation(format!("{name} wrote past the end of argument {i} ({} words)", b.len)));
                }
            }
        }
        Ok(())
    }
}

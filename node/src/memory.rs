//! Host memory: what a process that builds the network's circuits and proves on the CPU takes,
//! and the check, before it starts, that the machine has it. Past the machine's memory, a build
//! or a proof is ended by the kernel's out-of-memory killer with no word from us (`rollup
//! circuits` at 2^22 rows was, at 23.3 GiB), and again at every restart with the same flags.
//!
//! The figures are measured, not derived: the peak resident memory (VmHWM) of `rollup bench
//! --backend cpu` and `rollup circuits` at each size of the circuits, their reports' `memory`
//! and `host_memory_mib` (BENCHMARKS.md, "Host memory by circuit size" and "A prover's memory
//! over a long run"). Each is the most any run took, rounded up to 10 MiB, but for the two
//! largest sizes' proofs, which no long run here measured (see [`MEASURED`]). What is checked
//! against them is what the machine has available now: the kernel's `MemAvailable`, or less
//! where the process's cgroup has a limit (a container's).
//!
//! A device backend's proofs keep their large buffers on the device (`prover_gpu::cuda::
//! footprint` checks those); their host share is not measured yet (the `memory` of `rollup bench
//! --backend cuda` on a device will), so for them only the build is checked.

use aggregator::{AggregationCircuits, AGGREGATION_DEGREE_BITS};

/// MiB, as the figures are kept.
const MIB: u64 = 1 << 20;

/// What a process takes at one size of the circuits, MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// The peak while the circuits are built.
    pub build_peak: u64,
    /// Resident once they are built, with their constants and sigmas.
    pub built: u64,
    /// What each proof in flight on the CPU adds, at its peak over a long run: tens of batch
    /// proofs and merges of six, where a few proofs take less.
    pub cpu_proof: u64,
    /// What one proof by plonky2's own prover adds (`rollup bench`'s baseline, after its
    /// proving path, whose witnesses and proofs it still holds).
    pub stock_proof: u64,
}

/// The figures at 2^15, 2^16 … rows: entry `i` is 2^([`AGGREGATION_DEGREE_BITS`] + i)'s, as
/// [`aggregator::recursion::MOST_SLOTS_BY_DEGREE`] sizes them.
///
/// A proof's is the most a proof added in any run with one worker or two (the load's witnesses
/// included). Up to 2^17 that is a long run's: 24 to 80 batches and merges of six, where a run
/// of two to four batches and one smaller merge had shown less (2^15: 468 MiB with two workers
/// against 444; 2^16: 925 with one and 947 with two against 645 and 694; 2^17: 1 806 with two
/// against 1 629). A merge of six takes more than a batch proof, and the allocator's arenas
/// settle above a few proofs' peak. No long run at 2^18 or 2^19 fits in a session here, so
/// their figures are the short runs' times the largest ratio measured above, 947 / 694 = 1.365
/// (2^16, two workers): 2^18's short run with two workers took 3 024 MiB a proof, and 2^19's
/// with one (`rollup devnet --workers 1`, its sequencer and settlement node included: two
/// batches and a merge) 8 442.
///
/// A stock proof's is the bench's whole peak with one worker above the built circuits, up to
/// 2^18 (1.35, 1.74, 1.48 and 1.52 times ours with one worker, from short runs); at 2^19, where
/// the bench does not fit, it is the devnet's proof times the largest of those ratios, 1.74.
const MEASURED: [Figures; aggregator::recursion::MOST_SLOTS_BY_DEGREE.len()] = [
    Figures { build_peak: 1_060, built: 1_020, cpu_proof: 470, stock_proof: 590 },
    Figures { build_peak: 1_990, built: 1_990, cpu_proof: 950, stock_proof: 1_130 },
    Figures { build_peak: 3_830, built: 3_830, cpu_proof: 1_810, stock_proof: 2_150 },
    Figures { build_peak: 7_500, built: 7_420, cpu_proof: 4_130, stock_proof: 3_810 },
    Figures { build_peak: 14_850, built: 12_260, cpu_proof: 11_520, stock_proof: 14_690 },
];

/// The figures for the circuits of batches of `capacity` slots; `None` past the largest.
#[cfg(test)]
fn figures(capacity: usize) -> Option<Figures> {
    sized(capacity).map(|(_, f)| f)
}

/// The circuits' rows (log2) for batches of `capacity` slots, and their figures.
fn sized(capacity: usize) -> Option<(usize, Figures)> {
    let bits = AggregationCircuits::degree_bits_for(capacity).ok()?;
    Some((bits, *MEASURED.get(bits - AGGREGATION_DEGREE_BITS)?))
}

/// What a process is about to do, for [`check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Proofs at once on the CPU, on our pipeline.
    pub cpu_proofs: usize,
    /// The circuits are in memory already: only what comes after counts.
    pub built: bool,
    /// The circuits are read from a prover data file rather than built ([`READ_PEAK`]).
    pub read: bool,
    /// One proof by plonky2's own prover follows the others (`rollup bench`'s baseline).
    pub stock_baseline: bool,
}

/// Not enough host memory for what a process is about to do.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} takes about {need_mib} MiB of memory at its peak, and this machine has {available_mib} MiB available \
     (measured figures: BENCHMARKS.md, \"Host memory by circuit size\")"
)]
pub struct HostMemory {
    /// What was to be done, in words.
    pub what: String,
    /// What it takes, MiB.
    pub need_mib: u64,
    /// What the machine has available, MiB.
    pub available_mib: u64,
    /// How many proofs at once on the CPU would fit beside it (0: not even the build, one
    /// proof, or the baseline's).
    pub fit: usize,
}

/// The peak while circuits are read from a prover data file (`rollup prover --prover-data`),
/// as a share of [`Figures::built`], per mille: the circuits decoded so far and the next one's
/// bytes. Measured (VmHWM), the same sessions: 1 070 to 1 100 MiB at 2^15 rows (1 020 built:
/// 1.08), 2 114 at 2^16 (1 990: 1.06); 1.1 covers both.
pub const READ_PEAK: u64 = 1_100;

/// What `w` takes at its peak, MiB.
fn need_mib(f: Figures, w: Work) -> u64 {
    let proofs = (w.cpu_proofs as u64 * f.cpu_proof).max(if w.stock_baseline { f.stock_proof } else { 0 });
    if w.built {
        proofs
    } else {
        circuits_peak(f, w).max(f.built + proofs)
    }
}

/// The peak of getting the circuits of `f` into memory for `w`: building or reading them.
fn circuits_peak(f: Figures, w: Work) -> u64 {
    if w.read {
        (f.built * READ_PEAK).div_ceil(1000)
    } else {
        f.build_peak
    }
}

/// Refuses what would not fit in `available_mib`: see [`check`].
fn check_against(capacity: usize, w: Work, available_mib: u64) -> Result<(), HostMemory> {
    let Some((bits, f)) = sized(capacity) else { return Ok(()) };
    let need = need_mib(f, w);
    if need <= available_mib {
        return Ok(());
    }
    let base = if w.built { 0 } else { f.built };
    let fit = if (!w.built && circuits_peak(f, w) > available_mib)
        || (w.stock_baseline && base + f.stock_proof > available_mib)
    {
        0
    } else {
        (available_mib.saturating_sub(base) / f.cpu_proof.max(1)) as usize
    };
    let circuits = format!("the circuits of batches of {capacity} slots (2^{bits} rows)");
    let getting = if w.read { "reading" } else { "building" };
    let mut what = match (w.built, w.cpu_proofs) {
        (false, 0) => format!("{getting} {circuits}"),
        (false, n) => format!("{getting} {circuits} and making {n} of their proofs at once on the CPU"),
        (true, n) => format!("making {n} proofs at once on the CPU of {circuits}"),
    };
    if w.stock_baseline {
        what.push_str(", then one by plonky2's own prover (the baseline),");
    }
    Err(HostMemory { what, need_mib: need, available_mib, fit })
}

/// Refuses, before it starts, what this machine's available memory cannot hold: building the
/// circuits of `capacity` slots (unless they are in memory already), then `w`'s proofs. Passes
/// where the available memory cannot be read.
pub fn check(capacity: usize, w: Work) -> Result<(), HostMemory> {
    match available_mib() {
        Some(available) => check_against(capacity, w, available),
        None => Ok(()),
    }
}

/// This process's host memory at the stages of a run that builds the circuits then proves, MiB:
/// how the figures above are measured (`rollup bench` and `rollup circuits` report it).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Stages {
    /// The peak while the circuits were built (plonky2's build and preprocessing).
    pub circuits_build_peak: f64,
    /// Resident once they were built: the circuits, and what the allocator kept of the build.
    pub circuits_built: f64,
    /// The peak from there to the end of the proving (the baseline's proofs in `rollup bench`
    /// come after it).
    pub proving_peak: f64,
}

impl Stages {
    /// Read right after the circuits are built: their peak and what is resident, and the peak
    /// restarted for the proving to come.
    pub fn after_build() -> Self {
        let (peak, built) = (peak_mib(), status_mib("VmRSS"));
        // Where the peak cannot be restarted, the proving's figure is the whole run's so far:
        // at least the build's.
        let proving_peak = if reset_peak() { 0.0 } else { peak };
        Stages { circuits_build_peak: peak, circuits_built: built, proving_peak }
    }

    /// With the proving's peak read, once it is done.
    pub fn after_proving(self) -> Self {
        Stages { proving_peak: self.proving_peak.max(peak_mib()), ..self }
    }
}

/// Peak resident memory of this process (VmHWM), MiB: since it started, or since the last
/// [`reset_peak`].
pub fn peak_mib() -> f64 {
    status_mib("VmHWM")
}

/// A size in kB of `/proc/self/status` (`VmHWM`, `VmRSS`), in MiB; 0 where it cannot be read.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Starts [`peak_mib`] again from what is resident now (`/proc/self/clear_refs`, Linux 4.0 on).
/// Whether it could.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The memory this process may still take, MiB: the kernel's `MemAvailable`, or less under its
/// cgroup's limit (v2's `memory.max` at every level of its path, or v1's hierarchical limit),
/// less what the cgroup uses that it cannot reclaim. `None` where `/proc/meminfo` cannot be read.
pub fn available_mib() -> Option<u64> {
    let machine = meminfo_available(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| cgroup_available(&c, &Sys));
    Some(cgroup.map_or(machine, |c| c.min(machine)) / MIB)
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    meminfo_bytes(meminfo, "MemAvailable")
}

/// A field of `/proc/meminfo`'s text (`MemTotal`, `MemAvailable`: kB there), bytes.
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.split(':').next() == Some(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Files under `/sys/fs/cgroup`, read as text; a trait so that tests can give their own.
trait CgroupFs {
    fn read(&self, path: &str) -> Option<String>;
}

struct Sys;

impl CgroupFs for Sys {
    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(format!("/sys/fs/cgroup{path}")).ok()
    }
}

/// What this process's cgroup lets it take still, bytes, from `/proc/self/cgroup`'s text: the
/// least over its levels of the limit less the usage that cannot be reclaimed (the usage less
/// the inactive file pages). `None` without a limit.
fn cgroup_available(self_cgroup: &str, fs: &impl CgroupFs) -> Option<u64> {
    let stat = |text: &str, key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
        })
    };
    let mut least: Option<u64> = None;
    let mut take = |limit: u64, usage: u64, inactive: u64| {
        let left = limit.saturating_sub(usage.saturating_sub(inactive));
        least = Some(least.map_or(left, |l| l.min(left)));
    };
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if controllers.is_empty() {
            // v2: every level from the process's own up to the root's children.
            let mut dir = path.trim_end_matches('/').to_string();
            loop {
                if let (Some(max), Some(current)) =
                    (fs.read(&format!("{dir}/memory.max")), fs.read(&format!("{dir}/memory.current")))
                {
                    if let (Ok(max), Ok(current)) = (max.trim().parse::<u64>(), current.trim().parse::<u64>()) {
                        let inactive =
                            fs.read(&format!("{dir}/memory.stat")).and_then(|s| stat(&s, "inactive_file")).unwrap_or(0);
                        take(max, current, inactive);
                    }
                }
                match dir.rfind('/') {
                    Some(i) => dir.truncate(i),
                    None => break,
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            // v1: the hierarchical limit already takes the ancestors' into account. A container
            // without its own cgroup namespace sees its cgroup at the mount's root instead.
            let dir = format!("/memory{}", path.trim_end_matches('/'));
            let read = |name: &str| fs.read(&format!("{dir}/{name}")).or_else(|| fs.read(&format!("/memory/{name}")));
            let Some(s) = read("memory.stat") else { continue };
            let Some(usage) = read("memory.usage_in_bytes").and_then(|u| u.trim().parse().ok()) else { continue };
            // No limit is the largest page-aligned i64.
            if let Some(limit) = stat(&s, "hierarchical_memory_limit").filter(|&l| l < 1 << 62) {
                take(limit, usage, stat(&s, "total_inactive_file").unwrap_or(0));
            }
        }
    }
    least
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Files(HashMap<String, String>);

    impl CgroupFs for Files {
        fn read(&self, path: &str) -> Option<String> {
            self.0.get(path).cloned()
        }
    }

    fn files(entries: &[(&str, &str)]) -> Files {
        Files(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn every_size_of_the_circuits_has_its_figures() {
        for (i, &most) in aggregator::recursion::MOST_SLOTS_BY_DEGREE.iter().enumerate() {
            let f = figures(most).expect("figures");
            assert_eq!(f, MEASURED[i]);
            assert!(f.cpu_proof > 0 && f.built > 0 && f.build_peak >= f.built, "2^{}: {f:?}", 15 + i);
            // plonky2's own prover took more than ours in the same short run at every size
            // measured (1.35 to 1.74 times); ours over a long run takes up to 1.365 times that.
            assert!(f.stock_proof > 0 && f.stock_proof * 1365 > f.cpu_proof * 1000, "2^{}: {f:?}", 15 + i);
            if i > 0 {
                let smaller = MEASURED[i - 1];
                assert!(
                    f.built > smaller.built && f.cpu_proof > smaller.cpu_proof && f.stock_proof > smaller.stock_proof,
                    "grows with the rows: {f:?}"
                );
            }
        }
        assert_eq!(figures(0), None);
        assert_eq!(figures(circuits::MAX_BATCH_CAPACITY + 1), None);
    }

    #[test]
    fn what_fits_passes_and_what_does_not_says_how_many_proofs_would() {
        let f = figures(183).expect("2^15");
        let proofs = |n: usize| Work { cpu_proofs: n, ..Work::default() };
        let need = f.build_peak.max(f.built + 2 * f.cpu_proof);
        assert!(check_against(183, proofs(2), need).is_ok());
        let e = check_against(183, proofs(2), need - 1).expect_err("one MiB short");
        assert_eq!((e.need_mib, e.available_mib, e.fit), (need, need - 1, 1));
        let text = e.to_string();
        assert!(text.contains("183 slots (2^15 rows)") && text.contains("making 2 of their proofs at once"), "{text}");
        // Built already: only the proofs count.
        let built = |n: usize| Work { built: true, ..proofs(n) };
        assert!(check_against(183, built(2), 2 * f.cpu_proof).is_ok());
        let e = check_against(183, built(3), 2 * f.cpu_proof).expect_err("three");
        assert_eq!(e.fit, 2);
        // Not even the build.
        let e = check_against(183, proofs(0), f.build_peak - 1).expect_err("the build");
        assert_eq!(e.fit, 0);
        assert!(e.to_string().starts_with("building the circuits"), "{e}");
        // Read from a prover data file: the read's peak, not the build's.
        let read = |n: usize| Work { read: true, ..proofs(n) };
        let peak = (f.built * READ_PEAK).div_ceil(1000);
        assert!(check_against(183, read(0), peak).is_ok());
        let e = check_against(183, read(0), peak - 1).expect_err("the read");
        assert_eq!(e.fit, 0);
        assert!(e.to_string().starts_with("reading the circuits"), "{e}");
        assert!(check_against(183, read(1), f.built + f.cpu_proof).is_ok());
        // The baseline's stock proof, one at a time after ours, counts where it is the larger.
        let bench = |n: usize| Work { stock_baseline: true, ..proofs(n) };
        let with_stock = f.built + f.stock_proof;
        assert!(check_against(183, bench(1), with_stock).is_ok());
        let e = check_against(183, bench(1), with_stock - 1).expect_err("the baseline");
        assert_eq!((e.need_mib, e.fit), (with_stock, 0));
        assert!(e.to_string().contains("plonky2's own prover (the baseline)"), "{e}");
        let many = f.built + 4 * f.cpu_proof;
        assert!(many > with_stock && check_against(183, bench(4), many).is_ok(), "four of ours take more");
        // The largest circuits need more than the smallest, whatever the proofs.
        let largest = figures(circuits::MAX_BATCH_CAPACITY).expect("2^19");
        assert!(check_against(circuits::MAX_BATCH_CAPACITY, proofs(0), largest.build_peak - 1).is_err());
        assert!(check_against(183, proofs(0), largest.build_peak - 1).is_ok());
    }

    #[test]
    fn meminfo_gives_the_available_bytes() {
        let text = "MemTotal:       24683972 kB\nMemFree:        14961664 kB\nMemAvailable:   21018668 kB\n";
        assert_eq!(meminfo_available(text), Some(21_018_668 * 1024));
        assert_eq!(meminfo_available("MemTotal: 1 kB\n"), None);
        assert_eq!(meminfo_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn a_cgroup_v2_limit_counts_at_every_level_less_its_reclaimable_pages() {
        let fs = files(&[
            ("/a/b/memory.max", "max\n"),
            ("/a/b/memory.current", "1000\n"),
            ("/a/memory.max", "8000\n"),
            ("/a/memory.current", "5000\n"),
            ("/a/memory.stat", "anon 3000\ninactive_file 1000\nactive_file 1000\n"),
        ]);
        // /a: 8000 − (5000 − 1000); /a/b has no limit.
        assert_eq!(cgroup_available("0::/a/b\n", &fs), Some(4000));
        assert_eq!(cgroup_available("0::/\n", &fs), None);
        assert_eq!(cgroup_available("0::/elsewhere\n", &fs), None);
    }

    #[test]
    fn a_cgroup_v1_limit_is_its_hierarchical_one() {
        let limited = files(&[
            ("/memory/job/memory.usage_in_bytes", "6000\n"),
            ("/memory/job/memory.stat", "cache 10\nhierarchical_memory_limit 10000\ntotal_inactive_file 500\n"),
        ]);
        let text = "5:cpu:/\n4:memory:/job\n0::/\n";
        assert_eq!(cgroup_available(text, &limited), Some(4500));
        let unlimited = files(&[
            ("/memory/job/memory.usage_in_bytes", "6000\n"),
            ("/memory/job/memory.stat", "hierarchical_memory_limit 9223372036854771712\ntotal_inactive_file 0\n"),
        ]);
        assert_eq!(cgroup_available(text, &unlimited), None);
        // The path of the host's namespace, the cgroup mounted at the root.
        let at_root = files(&[
            ("/memory/memory.usage_in_bytes", "6000\n"),
            ("/memory/memory.stat", "hierarchical_memory_limit 10000\ntotal_inactive_file 0\n"),
        ]);
        assert_eq!(cgroup_available("4:memory:/docker/abc\n", &at_root), Some(4000));
    }

    #[test]
    fn this_machine_has_some_memory_available() {
        assert!(available_mib().is_some_and(|m| m > 0), "/proc/meminfo");
    }
}

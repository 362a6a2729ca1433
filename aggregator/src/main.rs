//! `owsu-aggregator`: the aggregator process (see `owsu_aggregator::cli`).

use clap::Parser;

// mimalloc rather than glibc's malloc: less CPU per batch and no arena per thread (see the
// README's benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` and `mi_option_purge_delay` in mimalloc.h (libmimalloc-sys
/// does not name them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once rather than after 10 ms (`main` sets a longer
/// delay for `run` and `rebuild`, measured for each). And commit
/// arena memory as it is used rather than whole arenas up front: ~70 MiB less at the peak of a
/// fifth simulated year (`owsu bench`), no slower. Run as a static constructor, because the
/// runtime allocates (and mimalloc makes its first arena) before `main`. mimalloc's own
/// environment variables (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ARENA_EAGER_COMMIT`) still win.
extern "C" fn tune_allocator() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: sets plain integer options; nothing else runs yet.
    #[allow(unsafe_code)]
    unsafe {
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
        if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[allow(unsafe_code)]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

/// How long a rebuild keeps freed pages before returning them to the system, in ms.
const BATCH_PURGE_DELAY_MS: std::ffi::c_long = 1_000;

/// The same for `run`, in ms.
const RUN_PURGE_DELAY_MS: std::ffi::c_long = 100;

fn main() {
    let cli = owsu_aggregator::cli::Cli::parse();
    let delay = match cli.command {
        // A rebuild is a batch job: freed pages kept for a second are reused rather than faulted
        // in again. Against 10 ms (mimalloc's default), paired with DuckDB over a year's raw
        // files: half the system time, wall 2.02 -> 1.70 s (DuckDB 1.54-1.58 s), peak RSS
        // 539 -> 628 MiB (DuckDB 676). Freed memory still goes back within the second, so the
        // peak stays bounded by `--memory-mib` and the batch being folded.
        owsu_aggregator::cli::Command::Rebuild(_) => Some(BATCH_PURGE_DELAY_MS),
        // A running aggregator frees each batch's buffers (messages, events, raw frames) as the
        // next batch allocates its own: kept a tenth of a second, the pages are reused rather
        // than returned and faulted in again. Catch-up of a simulated year against a delay of
        // 0, four pairs: wall 0.915x, system time 3.5 -> 2.7 s, peak RSS 400 -> 438 MiB. 250 ms
        // gave 0.90x for +56 MiB, a second 0.85x for +110 MiB: the peak counts against the
        // 512 MiB budget of a fifth year, so the shortest delay that pays.
        owsu_aggregator::cli::Command::Run(_) => Some(RUN_PURGE_DELAY_MS),
        _ => None,
    };
    if let Some(ms) = delay.filter(|_| std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()) {
        // SAFETY: sets a plain integer option, read by mimalloc on each purge.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms)
        };
    }
    owsu_runtime::logging::init(cli.log.log_format);
    owsu_runtime::exit::run_main("owsu-aggregator", || owsu_aggregator::cli::run(cli))
}

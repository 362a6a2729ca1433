use clap::Parser;

// mimalloc rather than glibc's malloc: less CPU per batch and no arena per thread (see the
// README's benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (libmimalloc-sys does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Return freed memory to the system at once rather than after 10 ms: batches free large
    // buffers in bursts, and with the delay the peak resident memory was ~40% higher.
    // SAFETY: sets a plain integer option, before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0)
    };
    let cli = owsu_aggregator::cli::Cli::parse();
    owsu_aggregator::cli::init_tracing(cli.log_format);
    match owsu_aggregator::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("owsu-aggregator: {e:#}");
            std::process::exit(1);
        }
    }
}

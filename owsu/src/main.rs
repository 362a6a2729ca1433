//! `owsu`: the demo and the bench (see `owsu::demo`).

use clap::Parser;

// mimalloc rather than glibc's malloc: parsing, hashing and encoding allocate per record, and
// malloc/free were a quarter of `publish`'s CPU (README, benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = owsu::demo::Cli::parse();
    // Logging is set up by the command: the demo writes its log to a file unless --verbose.
    owsu_runtime::exit::run_main("owsu", || owsu::demo::run(cli))
}

//! `owsu-producer`: what runs at each office (see `owsu_producer::cli`).

use clap::Parser;

// mimalloc rather than glibc's malloc: parsing, hashing and encoding allocate per record, and
// malloc/free were a quarter of `publish`'s CPU (README, benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = owsu_producer::cli::Cli::parse();
    owsu_runtime::logging::init(cli.log.log_format);
    owsu_runtime::exit::run_main("owsu-producer", || owsu_producer::cli::run(cli))
}

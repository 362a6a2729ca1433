use clap::Parser;

// mimalloc rather than glibc's malloc: parsing, hashing and encoding allocate per record, and
// malloc/free were a quarter of `publish`'s CPU (README, benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = owsu_producer::cli::Cli::parse();
    owsu_producer::cli::init_tracing(cli.log_format);
    match owsu_producer::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("owsu-producer: {e:#}");
            std::process::exit(1);
        }
    }
}

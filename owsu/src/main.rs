use clap::Parser;

// mimalloc rather than glibc's malloc: parsing, hashing and encoding allocate per record, and
// malloc/free were a quarter of `publish`'s CPU (README, benchmark notes).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = owsu::demo::Cli::parse();
    owsu_jobs::cli::init_tracing(owsu_jobs::cli::LogFormat::Human);
    match owsu::demo::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("owsu: {e:#}");
            std::process::exit(1);
        }
    }
}

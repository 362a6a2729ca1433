//! `owsu-jobs`: the jobs over the lake (see `owsu_jobs::cli`). Exits with the code the job
//! returns, or 1 with the error chain on stderr when it fails (`owsu_runtime::exit`).

use clap::Parser;

fn main() {
    let cli = owsu_jobs::cli::Cli::parse();
    owsu_runtime::logging::init(cli.log.log_format);
    owsu_runtime::exit::run_main("owsu-jobs", || owsu_jobs::cli::run(cli))
}

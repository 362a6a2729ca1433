//! `owsu-jobs`: the jobs over the lake (see `owsu_jobs::cli`).

use clap::Parser;

fn main() {
    let cli = owsu_jobs::cli::Cli::parse();
    owsu_runtime::logging::init(cli.log.log_format);
    owsu_runtime::exit::run_main("owsu-jobs", || owsu_jobs::cli::run(cli))
}

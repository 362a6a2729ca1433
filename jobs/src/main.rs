use clap::Parser;

fn main() {
    let cli = owsu_jobs::cli::Cli::parse();
    owsu_jobs::cli::init_tracing(cli.log_format);
    match owsu_jobs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("owsu-jobs: {e:#}");
            std::process::exit(1);
        }
    }
}

use clap::Parser;

fn main() {
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

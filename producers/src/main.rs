use clap::Parser;

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

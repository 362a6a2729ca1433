use clap::Parser;

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

use std::process::ExitCode;

use clap::Parser;
use hopgate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hopgate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stdio_tunnel = matches!(&cli.command, Some(cli::Command::Tunnel(t)) if t.stdio);
    let code = runtime.block_on(cli::run(cli));
    if stdio_tunnel {
        // tokio's stdin reader may still be blocked in read(2): leave without waiting for it.
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 });
    }
    code
}

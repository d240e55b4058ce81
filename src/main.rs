use std::process::ExitCode;

use clap::Parser;
use hopgate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing(&cli.global);
    // With one CPU to run on (taskset, a container's quota) the current-thread scheduler does the work of a
    // one-worker multi-thread runtime with less synchronisation: bench/run A measured 5% more requests per CPU
    // second. Blocking work goes through spawn_blocking, never block_in_place (which panics on this runtime).
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
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

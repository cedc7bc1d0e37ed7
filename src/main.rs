//! The `agent` binary: parse the command line, set up logging, run the
//! command, and map the outcome to an exit code (0 finished, 1 error,
//! 2 usage error, 3 stopped by a budget, a guard or the user).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    agent::cli::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(agent::cli::execute(cli));
    // A read of stdin that cannot be cancelled (an MCP server on a
    // terminal, stopped by Ctrl-C) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            let mut out = anstream::AutoStream::auto(std::io::stderr());
            let red = anstyle::AnsiColor::Red.on_default().bold();
            let _ = std::io::Write::write_fmt(
                &mut out,
                format_args!("{red}error:{red:#} {}\n", agent::cli::describe(&e)),
            );
            ExitCode::from(1)
        }
    }
}

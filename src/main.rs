use std::process::ExitCode;

use receptor::config::{self, Invocation};
use receptor::{certs, control, daemon, logging};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match config::parse_args(&args) {
        Ok(Invocation::Run(cfg)) => cfg,
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("{}", control::reply::VERSION);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            println!("Error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(tool) = &cfg.cert_tool {
        return run_cert_tool(tool);
    }
    logging::init(cfg.log_level.level_filter());
    if let Some(runner) = &cfg.command_runner {
        return ExitCode::from(receptor::work::runner::run(runner, None) as u8);
    }
    if cfg.command_runner_server {
        return ExitCode::from(receptor::work::forkserver::serve() as u8);
    }
    let reread = Box::new(move || match config::parse_args(&args)? {
        Invocation::Run(cfg) => Ok(*cfg),
        _ => Err(config::ConfigError(
            "the command line no longer starts a node".into(),
        )),
    });
    match daemon::start(*cfg, reread) {
        Ok(d) => ExitCode::from(d.wait() as u8),
        Err(daemon::StartError::NothingToDo) => {
            log::warn!("Nothing to do - no backends are running.");
            let argv0 = std::env::args().next().unwrap_or_else(|| "receptor".into());
            println!("Run {argv0} --help for command line instructions.");
            ExitCode::from(1)
        }
        Err(e) => {
            log::error!("{e}");
            println!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The cert tools run instead of a node and report like config errors.
fn run_cert_tool(tool: &config::CertToolCfg) -> ExitCode {
    let now = time::OffsetDateTime::now_utc();
    let mut stdin = std::io::stdin().lock();
    match certs::tool::run(tool, now, &mut stdin, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("Error: {e}");
            ExitCode::from(1)
        }
    }
}

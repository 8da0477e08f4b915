//! `dlsd`, the dls server binary: command line, logging, signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use log::{error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use dls::config::Config;
use dls::engine::stats::TftpSnapshot;
use dls::engine::tftp::TftpContext;
use dls::engine::Engine;

/// dls: network-boot server for diskless labs (TFTP today; DHCP and iSCSI
/// are on the way).
///
/// Configuration is one TOML file; see README.md for every key. Logs go to
/// standard error; set the level with --log-level or RUST_LOG.
#[derive(Parser)]
#[command(name = "dlsd", version, about, long_about)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM. SIGHUP reloads the TFTP
    /// settings of the configuration file for new requests.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print it with every default filled
    /// in. Exits 1, naming the file, the key and the reason, if it is invalid.
    CheckConfig {
        /// The configuration file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    match cli.command {
        Command::CheckConfig { path } => match Config::load(&path) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dlsd: invalid configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => serve(&config),
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dlsd: invalid configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    if config.tftp.is_none() {
        eprintln!(
            "dlsd: {}: no service configured (add a [tftp] section)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dlsd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = match Engine::start(&config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("dlsd: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "dlsd {} running (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );

    let mut stopping = false;
    let mut current = config;
    loop {
        for signal in signals.pending() {
            match signal {
                SIGHUP => current = reload(path, &current, &engine),
                _ if stopping => {
                    warn!("second stop signal: ending transfers now");
                    engine.abort();
                }
                _ => {
                    info!("stop signal: no new requests; finishing transfers in flight");
                    stopping = true;
                    engine.shutdown();
                }
            }
        }
        if engine.any_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats: Vec<_> = engine.stats().to_vec();
    let clean = engine.join();
    log_summary(&TftpSnapshot::sum(&stats));
    if clean && stopping {
        ExitCode::SUCCESS
    } else {
        error!("a worker thread ended unexpectedly");
        ExitCode::FAILURE
    }
}

/// Re-reads the file; applies it if valid, keeps `current` otherwise.
fn reload(path: &Path, current: &Config, engine: &Engine) -> Config {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("reload refused, keeping the running configuration: {e}");
            return current.clone();
        }
    };
    match (&new.tftp, &current.tftp) {
        (Some(t), Some(old)) => {
            if t.listen != old.listen {
                warn!(
                    "reload: tftp.listen changes need a restart; keeping {:?}",
                    old.listen
                );
            }
            match TftpContext::new(t, current.worker_count()) {
                Ok(ctx) => {
                    engine.reload_tftp(Arc::new(ctx));
                    info!("reload: configuration applied to new requests");
                    new
                }
                Err(e) => {
                    error!("reload refused, keeping the running configuration: {e}");
                    current.clone()
                }
            }
        }
        _ => {
            error!("reload refused: adding or removing a service needs a restart");
            current.clone()
        }
    }
}

fn log_summary(s: &TftpSnapshot) {
    let errors: Vec<String> = s
        .errors
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{}={n}", k.name()))
        .collect();
    info!(
        "tftp summary: requests={} completed={} bytes_sent={} packets_sent={} retransmits={} errors=[{}] p50={}us p99={}us max={}us",
        s.requests,
        s.completed,
        s.bytes_sent,
        s.packets_sent,
        s.retransmits,
        errors.join(" "),
        s.durations.value_at_quantile(0.5),
        s.durations.value_at_quantile(0.99),
        s.durations.max()
    );
}

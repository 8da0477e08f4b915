//! `dlsd`, the dls server binary: command line and start-up.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use log::info;

use dls::config::Config;
use dls::control::Control;
use dls::engine::Engine;

/// dls: network-boot server for diskless labs: DHCP and proxyDHCP, TFTP
/// and iSCSI in one daemon.
///
/// Configuration is one TOML file; README.md lists every key. Logs go to
/// standard error; set the level with --log-level or RUST_LOG.
#[derive(Parser)]
#[command(name = "dlsd", version, about, long_about)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info",
          value_parser = ["off", "error", "warn", "info", "debug", "trace"])]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server until SIGINT or SIGTERM (the first finishes transfers
    /// in flight, a second ends them). SIGHUP reloads the configuration.
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
        /// Do not open the LUNs' backing stores: check a file before its
        /// volumes exist, or on a copy of the server without them.
        #[arg(long)]
        skip_luns: bool,
    },
    /// Print the iPXE script dlsd generates from the configuration's
    /// `[[dhcp.host]]` root paths (served over TFTP under `[dhcp.boot]
    /// ipxe_script` when `generate_ipxe_script = true`).
    IpxeScript {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration file, then tell the running server (found
    /// through `engine.pid_file`) to reload it, with SIGHUP.
    Reload {
        /// The configuration file the server runs with.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::CheckConfig { path, skip_luns } => check_config(&path, skip_luns),
        Command::Serve { config } => serve(&config),
        Command::Reload { config } => reload(&config),
        Command::IpxeScript { config } => ipxe_script(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dlsd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path, skip_luns: bool) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| format!("invalid configuration: {e}"))?;
    // What only the files can tell: each LUN's backing store opens.
    if let Some(i) = config.iscsi.as_ref().filter(|_| !skip_luns) {
        dls::engine::iscsi::IscsiContext::new(i)
            .map_err(|e| format!("invalid configuration: {}: {e}", path.display()))?;
    }
    if !config.has_service() {
        return Err(format!(
            "{}: no service configured (add [tftp], [dhcp] or [iscsi])",
            path.display()
        ));
    }
    print!("{}", config.to_toml());
    Ok(())
}

fn ipxe_script(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| format!("invalid configuration: {e}"))?;
    let Some(dhcp) = &config.dhcp else {
        return Err(format!(
            "{}: no [dhcp] section: the script is made from [[dhcp.host]] root paths",
            path.display()
        ));
    };
    if !dhcp.boot.generate_ipxe_script {
        log::warn!(
            "{}: [dhcp.boot] generate_ipxe_script is off: dlsd does not serve this script",
            path.display()
        );
    }
    print!("{}", dls::ipxe::script(dhcp));
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every TFTP transfer
/// and iSCSI connection holds descriptors, and a shell's default of 1024
/// would quietly cap a boot storm.
fn raise_fd_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        log::warn!("cannot raise the open-file limit from {soft} to {hard}");
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
    if let Some(t) = &config.tftp {
        // Each transfer holds a socket and, on the pread path, the file.
        if (2 * t.max_transfers) as u64 + 64 > limit {
            log::warn!(
                "open-file limit {limit} is low for tftp.max_transfers = {}: some transfers will fail to open",
                t.max_transfers
            );
        }
    }
}

fn serve(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| format!("invalid configuration: {e}"))?;
    if !config.has_service() {
        return Err(format!(
            "{}: no service configured (add [tftp], [dhcp] or [iscsi])",
            path.display()
        ));
    }
    raise_fd_limit(&config);
    let pid_file = config.engine.pid_file.clone();
    let engine = Engine::start(&config).map_err(|e| format!("cannot start: {e}"))?;
    let control = Control::new(path, config, engine).map_err(|e| format!("cannot start: {e}"))?;
    if let Some(p) = &pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("engine.pid_file {}: {e}", p.display()))?;
    }
    info!(
        "dlsd {} running (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let clean = control.run();
    if let Some(p) = &pid_file {
        let _ = std::fs::remove_file(p);
    }
    if clean {
        Ok(())
    } else {
        Err("stopped after a worker failure".into())
    }
}

fn reload(path: &Path) -> Result<(), String> {
    let config =
        Config::load(path).map_err(|e| format!("invalid configuration, not reloading: {e}"))?;
    if let Some(i) = &config.iscsi {
        dls::engine::iscsi::IscsiContext::new(i).map_err(|e| {
            format!(
                "invalid configuration, not reloading: {}: {e}",
                path.display()
            )
        })?;
    }
    let pid_file = config.engine.pid_file.ok_or_else(|| {
        format!(
            "{}: engine.pid_file is not set, so the server cannot be found",
            path.display()
        )
    })?;
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("engine.pid_file {}: {e}", pid_file.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("engine.pid_file {}: not a PID", pid_file.display()))?;
    // A pid file left by a crash may name a process that reuses the PID:
    // signal it only if it is a dlsd (Linux; elsewhere the check is skipped).
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        if comm.trim() != "dlsd" {
            return Err(format!(
                "engine.pid_file {} names pid {pid}, which is {:?}, not dlsd (a stale pid file?)",
                pid_file.display(),
                comm.trim()
            ));
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| format!("cannot signal dlsd (pid {pid}): {e}"))?;
    println!("dlsd (pid {pid}): reload requested");
    Ok(())
}

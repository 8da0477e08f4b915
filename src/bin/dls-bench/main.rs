//! `dls-bench`: load generators that check every byte they receive.
//!
//! `tftp`, `dhcp`, `iscsi` and `storm` (all three in the order a booting
//! machine uses them). Every run is bounded in count and time; point it
//! only at loopback or at hosts in namespaces you made.

mod dhcp;
mod iscsi;
mod report;
mod storm;
mod tftp;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generators for dls and its peers; every byte received is checked.
#[derive(Parser)]
#[command(
    name = "dls-bench",
    version,
    about = "Load generators for dls and its peers; every byte received is checked."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Many concurrent TFTP read transfers of one file against any server.
    Tftp(tftp::Args),
    /// DHCP DISCOVER/OFFER/REQUEST/ACK exchanges from many MACs, as a relay agent.
    Dhcp(dhcp::Args),
    /// S iSCSI sessions x queue depth Q of READ/WRITE commands against any target.
    Iscsi(iscsi::Args),
    /// A boot storm: N machines each doing DHCP, TFTP (iPXE binary and
    /// script) and an iSCSI login and read, all at once.
    Storm(storm::Args),
    /// Medians, ratios against the best peer, tables and charts of perf/ rows.
    Report(report::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tftp(args) => tftp::run(&args),
        Command::Dhcp(args) => dhcp::run(&args),
        Command::Iscsi(args) => iscsi::run(&args),
        Command::Storm(args) => storm::run(&args),
        Command::Report(args) => report::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("dls-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

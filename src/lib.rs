//! dls: a network-boot server for diskless bare-metal labs.
//!
//! Layers, each depending only on the ones before it:
//! - [`tftp`] (and later iSCSI and DHCP): wire formats and sans-IO state
//!   machines; no sockets, files or clocks.
//! - [`sys`]: the only place with `unsafe`; OS calls behind one signature
//!   for Linux and FreeBSD.
//! - [`engine`]: worker threads, one mio poll each, owning every socket.
//! - [`config`]: the TOML file.

pub mod config;
pub mod control;
pub mod dhcp;
pub mod engine;
pub mod ipxe;
pub mod iscsi;
pub mod sys;
pub mod tftp;

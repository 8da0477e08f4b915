//! DHCP and PXE proxyDHCP, the service that tells a booting machine its
//! address and where its first bytes are.
//!
//! - [`wire`]: message parse and encode over `dhcproto` (RFC 2131, 2132, 3396).
//! - [`boot`]: client architecture and boot file selection (RFC 4578, PXE 2.1,
//!   iPXE).
//! - [`lease`]: bindings and the address pool.
//! - [`store`]: the crash-safe lease journal; the only part touching files.
//! - [`server`]: the sans-IO decision logic; its docs give the call order.
//! - [`socket`]: the I/O shell the control thread drives (sockets, store).
//! - [`config`]: the `[dhcp]` section.
//!
//! Everything but `store` and `socket` is free of sockets, files and clocks.

pub mod boot;
pub mod config;
pub mod lease;
pub mod server;
pub mod socket;
pub mod store;
pub mod wire;

pub use server::{Arrival, Decision, Ignored, Outgoing, Server};

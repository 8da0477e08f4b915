//! The storm's DHCP phase: DISCOVER, OFFER, REQUEST, ACK through one relay
//! socket shared by every machine.
//!
//! A relay agent's replies all come back to its port 67, so one receiver
//! thread reads them and hands each to the machine waiting on its xid.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use dhcproto::v4::{self, DhcpOption, MessageType};

use crate::dhcp::wire::{self, Reply, ACK, NAK, OFFER};

/// How long a machine waits for each answer, and how often it asks.
const WAIT: Duration = Duration::from_secs(1);
const TRIES: u32 = 4;

type Waiters = Arc<Mutex<HashMap<u32, Sender<Reply>>>>;

pub struct Relay {
    socket: Arc<UdpSocket>,
    local: Ipv4Addr,
    server: SocketAddr,
    waiters: Waiters,
    next_xid: AtomicU32,
    stop: Arc<AtomicBool>,
    receiver: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    pub fn start(local: Ipv4Addr, server: SocketAddr) -> io::Result<Relay> {
        let socket = UdpSocket::bind(SocketAddr::from((local, 67)))
            .map_err(|e| io::Error::new(e.kind(), format!("relay {local}:67: {e}")))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let socket = Arc::new(socket);
        let waiters: Waiters = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (socket, waiters, stop) = (socket.clone(), waiters.clone(), stop.clone());
            std::thread::spawn(move || receive(&socket, &waiters, &stop))
        };
        Ok(Relay {
            socket,
            local,
            server,
            waiters,
            next_xid: AtomicU32::new(std::process::id().wrapping_mul(0x9e37_79b9)),
            stop,
            receiver: Mutex::new(Some(receiver)),
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.receiver.lock().ok().and_then(|mut r| r.take()) {
            let _ = h.join();
        }
    }

    /// One full exchange for `mac`; the ACKed address.
    pub fn exchange(&self, mac: [u8; 6], deadline: Instant) -> Result<Ipv4Addr, String> {
        let xid = self.next_xid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel::bounded(8);
        self.waiters
            .lock()
            .map_err(|_| "relay poisoned")?
            .insert(xid, tx);
        let result = self.exchange_as(xid, mac, &rx, deadline);
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&xid);
        }
        result
    }

    fn exchange_as(
        &self,
        xid: u32,
        mac: [u8; 6],
        replies: &Receiver<Reply>,
        deadline: Instant,
    ) -> Result<Ipv4Addr, String> {
        let discover = self.message(xid, mac, MessageType::Discover, &[]);
        let offer = self.ask(&discover, replies, OFFER, deadline)?;
        let server_id = offer.server_id.ok_or("OFFER without a server identifier")?;
        let extra = [
            DhcpOption::ServerIdentifier(server_id),
            DhcpOption::RequestedIpAddress(offer.yiaddr),
        ];
        let request = self.message(xid, mac, MessageType::Request, &extra);
        let ack = self.ask(&request, replies, ACK, deadline)?;
        if ack.yiaddr != offer.yiaddr {
            return Err(format!(
                "ACK for {} after an OFFER of {}",
                ack.yiaddr, offer.yiaddr
            ));
        }
        Ok(ack.yiaddr)
    }

    /// A relayed PXE BIOS client message, as a NIC's boot ROM sends it.
    fn message(&self, xid: u32, mac: [u8; 6], kind: MessageType, extra: &[DhcpOption]) -> Vec<u8> {
        let mut options = vec![
            DhcpOption::ClassIdentifier(b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            DhcpOption::ClientSystemArchitecture(v4::Architecture::X86_Bios),
        ];
        options.extend_from_slice(extra);
        wire::encode(xid, mac, self.local, kind, &options)
    }

    /// Sends `bytes` until a reply of type `want` comes (a NAK fails).
    fn ask(
        &self,
        bytes: &[u8],
        replies: &Receiver<Reply>,
        want: u8,
        deadline: Instant,
    ) -> Result<Reply, String> {
        for _ in 0..TRIES {
            if Instant::now() >= deadline {
                break;
            }
            self.socket
                .send_to(bytes, self.server)
                .map_err(|e| format!("send to {}: {e}", self.server))?;
            let until = (Instant::now() + WAIT).min(deadline);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                let Ok(reply) = replies.recv_timeout(left) else {
                    break;
                };
                match reply.message_type {
                    Some(t) if t == want => return Ok(reply),
                    Some(NAK) => return Err("NAK".into()),
                    _ => {}
                }
            }
        }
        let name = if want == OFFER { "OFFER" } else { "ACK" };
        Err(format!("no {name} after {TRIES} tries"))
    }
}

fn receive(socket: &UdpSocket, waiters: &Waiters, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(msg) = Reply::parse(&buf[..len]) else {
            continue;
        };
        let waiter = waiters.lock().ok().and_then(|w| w.get(&msg.xid).cloned());
        if let Some(tx) = waiter {
            let _ = tx.try_send(msg);
        }
    }
}

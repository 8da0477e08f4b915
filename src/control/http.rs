//! The control thread's HTTP endpoint: `/metrics`, `/health` and
//! `/api/v1/status`, over plain HTTP/1.1 with one request per connection.
//!
//! It must never let a client hold the control thread: reads are bounded in
//! size ([`MAX_REQUEST`]) and in time ([`CONN_TIMEOUT`]), connections are
//! bounded in number, and every socket is non-blocking in the thread's poll.
//! Request parsing is httparse's; this file only routes and frames.
//!
//! Not done: keep-alive and pipelining (each response closes the connection,
//! which Prometheus and curl handle), TLS and authentication (bind it to
//! loopback or a management network).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

/// Largest request head accepted; beyond it the answer is 431.
pub const MAX_REQUEST: usize = 16 * 1024;
/// A connection must deliver its request and take its answer in this time.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once; more are closed on accept.
const MAX_CONNS: usize = 64;
/// Connections accepted per wakeup.
const MAX_ACCEPTS_PER_WAKEUP: usize = 32;

pub const LISTENER: Token = Token(1 << 20);
const CONN_BASE: usize = 2 << 20;

/// A response the router produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// A HEAD request: send the head as for GET, without the body.
    pub head_only: bool,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            head_only: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What a complete request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
}

/// Parses a request head from `buf`: `Ok(None)` while incomplete, or the
/// response to send at once for a request that cannot be served.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => {
            return Err(Response::text(431, "request head too large\n"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Response::text(431, "too many headers\n"))
        }
        Err(e) => return Err(Response::text(400, &format!("bad request: {e}\n"))),
    }
    // A body is never needed: every route is a GET.
    let has_body = req.headers.iter().any(|h| {
        (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    });
    if has_body {
        return Err(Response::text(413, "request bodies are not accepted\n"));
    }
    Ok(Some(Request {
        method: req.method.unwrap_or("").to_owned(),
        path: req.path.unwrap_or("").to_owned(),
    }))
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// The listener and its connections.
pub struct HttpServer {
    listener: TcpListener,
    conns: Slab<Conn>,
}

impl HttpServer {
    pub fn bind(addr: SocketAddr, registry: &Registry) -> io::Result<HttpServer> {
        let mut listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("http.listen {addr}: {e}")))?;
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(HttpServer {
            listener,
            conns: Slab::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn owns(token: Token) -> bool {
        token == LISTENER || (CONN_BASE..CONN_BASE + (1 << 20)).contains(&token.0)
    }

    /// The earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|(_, c)| c.deadline).min()
    }

    /// Handles readiness; `route` turns a request into a response.
    pub fn ready(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        route: &mut dyn FnMut(&Request) -> Response,
    ) {
        if token == LISTENER {
            self.accept(registry, now);
        } else {
            self.serve(token.0 - CONN_BASE, registry, route);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_WAKEUP {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("http: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNS {
                debug!("http: {peer}: too many connections, closing");
                continue;
            }
            let entry = self.conns.vacant_entry();
            let token = Token(CONN_BASE + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            entry.insert(Conn {
                stream,
                peer,
                buf: Vec::with_capacity(1024),
                out: Vec::new(),
                written: 0,
                deadline: now + CONN_TIMEOUT,
            });
        }
    }

    fn serve(
        &mut self,
        key: usize,
        registry: &Registry,
        route: &mut dyn FnMut(&Request) -> Response,
    ) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.out.is_empty() {
            match read_request(c) {
                ReadState::Incomplete => return,
                ReadState::Closed => return self.close(key, registry),
                ReadState::Ready(req) => c.out = route(&req).encode(),
                ReadState::Refuse(resp) => c.out = resp.encode(),
            }
        }
        loop {
            match c.stream.write(&c.out[c.written..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.written += n;
                    if c.written == c.out.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.close(key, registry);
    }

    /// Closes connections past their deadline.
    pub fn expire(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            if let Some(c) = self.conns.get(key) {
                debug!("http: {}: timed out", c.peer);
            }
            self.close(key, registry);
        }
    }

    fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

enum ReadState {
    Incomplete,
    Closed,
    Ready(Request),
    Refuse(Response),
}

/// Reads what is available and parses what has arrived so far.
fn read_request(c: &mut Conn) -> ReadState {
    let mut chunk = [0u8; 4096];
    loop {
        match c.stream.read(&mut chunk) {
            // A client may send its request and half-close at once (nc,
            // socat): answer what arrived before giving up on it.
            Ok(0) => {
                return match parse_request(&c.buf) {
                    Ok(Some(req)) => ReadState::Ready(req),
                    _ => ReadState::Closed,
                }
            }
            Ok(n) => {
                // Keep at most one byte past the limit: enough to know.
                let room = (MAX_REQUEST + 1).saturating_sub(c.buf.len());
                c.buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadState::Closed,
        }
        if c.buf.len() > MAX_REQUEST {
            break;
        }
    }
    match parse_request(&c.buf) {
        Ok(Some(req)) => ReadState::Ready(req),
        Ok(None) => ReadState::Incomplete,
        Err(resp) => {
            debug!(
                "http: {}: {} {}",
                c.peer,
                resp.status,
                String::from_utf8_lossy(&resp.body).trim_end()
            );
            ReadState::Refuse(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_partial_and_bad_requests() {
        let r = parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(parse_request(b"GET /metr").unwrap(), None);
        assert_eq!(
            parse_request(b"\x01\x02 garbage\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let body = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_request(body).unwrap_err().status, 413);
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 1, b'a');
        assert_eq!(parse_request(&big).unwrap_err().status, 431);
    }
}

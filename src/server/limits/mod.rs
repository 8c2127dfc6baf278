//! Bounds on what clients can hold of an HTTP server, shared by `jwks-operator serve` and the
//! operator's metrics endpoint. Nothing here knows either server, so both may use it.
//!
//! - **A connection cap that never makes a new client wait** ([`ConnectionCap`]). At the cap, the
//!   connections that have gone longest without moving a byte (idle keep-alive connections, or
//!   ones stalled on a peer that does not read) are closed to admit new ones, a few at a time so
//!   that a queue of newcomers is not admitted one close at a time. The alternatives fail someone
//!   honest: leaving new connections in the kernel's accept queue lets whoever holds the cap
//!   starve every newcomer; refusing connections beyond the cap fails the newcomers instead;
//!   timeouts alone free a slot only once they expire. Shedding the stalest costs an honest
//!   client at most a reconnect (of an idle keep-alive connection), and to hold the cap an
//!   attacker has to keep every one of its connections busier than the newest client.
//! - **Per-connection timeouts** ([`ConnectionLimits`], [`WatchedStream`]). A request head must
//!   arrive within the header read timeout (hyper restarts it whenever a keep-alive connection
//!   goes idle); a write that the peer takes no byte of for the write timeout, or a connection on
//!   which no byte moves either way for the idle timeout, whatever it is doing, is closed.
//! - **Accept errors back off** instead of spinning ([`ConnectionCap::accept`]); running out of
//!   file descriptors also sheds the stalest connections, as the cap does, so that new clients
//!   are not locked out when the process may open fewer descriptors than the cap allows.

mod cap;
mod stream;

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;

pub use cap::{ACCEPT_BACKOFF, ConnectionCap, Slot};
pub use stream::WatchedStream;

/// hyper refuses (panics on) a smaller read buffer.
const MIN_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// What one server allows each client connection, and how many connections it keeps open.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections; at this many, admitting one sheds the stalest.
    pub max_connections: usize,
    /// Time allowed to send a complete request head, counted from the first read of a new
    /// connection or from the end of the previous response.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// A write that the peer takes no byte of for this long closes the connection.
    pub write_timeout: Duration,
    /// The request line and headers must fit in this (at least 8 KiB, hyper's smallest buffer);
    /// a larger request head is answered 431 and the connection closed.
    pub max_request_head_bytes: usize,
}

impl ConnectionLimits {
    /// An HTTP/1.1 connection builder that enforces the header read timeout and head size.
    pub fn http1(&self) -> http1::Builder {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(self.max_request_head_bytes.max(MIN_REQUEST_HEAD_BYTES))
            .keep_alive(true);
        http
    }
}

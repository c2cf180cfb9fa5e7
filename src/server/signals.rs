//! Graceful shutdown on SIGTERM and SIGINT (feature `signal`, on by default): the drain the
//! bundled servers do, for a user's `main`.
//!
//! The first signal drains the server ([`ServerHandle::drain`]): it stops accepting, sends
//! every connection GOAWAY, answers what it has read, and [`Server::run`] returns once the
//! connections are closed or the drain timeout passes. A second signal stops it at once
//! ([`ServerHandle::shutdown`]), as Redis and most servers do on a repeated Ctrl-C. Signals are
//! heard on a thread of their own through `signal-hook`, the well-kept crate for signal-safe
//! handling (std offers none).

use std::io;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::{Server, ServerHandle};

/// Listens for SIGTERM and SIGINT until dropped; from [`drain_on_signals`].
///
/// While it lives, those signals drain or stop the server instead of killing the process.
/// Dropping it restores nothing (the process keeps signal-hook's handlers, which then do
/// nothing) but ends the listening thread.
#[derive(Debug)]
#[must_use = "the signals are heard only while the guard lives"]
pub struct SignalGuard {
    handle: Handle,
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        self.handle.close();
    }
}

/// Drains `server` on the first SIGTERM or SIGINT, waiting at most `drain_timeout` for its
/// connections, and stops it at once on the next one. Install it before telling anyone the
/// address, so that a signal sent as soon as the server is up drains it instead of killing
/// the process. Each signal is logged at `info` (the first) or `warn` (the second).
///
/// # Errors
/// The error of installing the handlers or starting the thread `courier-signals`.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use courier_rpc::server::{drain_on_signals, Server};
/// use courier_rpc::Router;
///
/// # fn main() -> std::io::Result<()> {
/// let server = Server::builder().bind(Router::new())?;
/// let _signals = drain_on_signals(server.handle(), Duration::from_secs(10))?;
/// println!("listening on {}", server.local_addr());
/// server.run() // returns once SIGTERM has drained it
/// # }
/// ```
pub fn drain_on_signals(server: ServerHandle, drain_timeout: Duration) -> io::Result<SignalGuard> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("courier-signals".into())
        .spawn(move || {
            for (n, signal) in signals.forever().enumerate() {
                let which = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                if n == 0 {
                    log::info!(
                        "{which}: draining (at most {} s; send it again to stop now)",
                        drain_timeout.as_secs_f64()
                    );
                    server.drain(drain_timeout);
                } else {
                    log::warn!("{which} again: stopping now");
                    server.shutdown();
                }
            }
        })?;
    Ok(SignalGuard { handle })
}

impl Server {
    /// Serves like [`Server::run`] until SIGTERM or SIGINT has drained the server
    /// ([`drain_on_signals`] with `drain_timeout`; a second signal stops it at once).
    ///
    /// # Errors
    /// As [`Server::run`], and the error of installing the signal handlers.
    pub fn run_until_signal(self, drain_timeout: Duration) -> io::Result<()> {
        let _signals = drain_on_signals(self.handle(), drain_timeout)?;
        self.run()
    }
}

// Graceful shutdown: a server that serves until SIGTERM or SIGINT (Ctrl-C), then drains: it
// stops accepting, tells each connection GOAWAY, answers every request it has already read
// (waiting at most 5 s for them), and returns. A second signal stops it at once.
//
// Run it with `cargo run --example graceful_shutdown` (or `-- 127.0.0.1:7000` for a fixed
// address). It prints `listening on ADDR`; its one method, `sleeper.sleep` (service 120,
// method 1), takes a u32, sleeps that many milliseconds on the worker pool and answers the
// same number. Press Ctrl-C, or `kill` it, while calls are in flight: they are still answered,
// and it prints `drained` and exits 0.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use courier_rpc::{service, Context, Router, Server, Status};

service! {
    /// Service 120: a slow method.
    pub mod sleeper(service = 120, name = "sleeper") {
        trait Sleeper;
        client SleeperClient;
        /// Sleeps `ms` milliseconds on the worker pool; answers `ms`.
        rpc(blocking) SLEEP = 1: sleep(u32) -> u32;
    }
}

struct Sleepy;

impl sleeper::Sleeper for Sleepy {
    fn sleep(&self, _ctx: &Context, ms: u32) -> Result<u32, Status> {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        Ok(ms)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(addr) => addr.parse()?,
        None => "127.0.0.1:0".parse()?,
    };
    let mut router = Router::new();
    router.add_service(sleeper::service(Sleepy));
    let server = Server::builder().addr(addr).bind(router)?;

    // Whoever reads this line may connect at once: the socket is bound and queues them.
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush()?;
    server.run_until_signal(Duration::from_secs(5))?;
    println!("drained");
    Ok(())
}

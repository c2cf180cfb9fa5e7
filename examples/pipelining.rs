// Pipelining: the client queues 100 requests with `Client::send` without waiting for any
// answer, then collects them with `Client::wait`, here in reverse order: each response is
// matched to its request by id, whatever order they arrive in. Then the same 100 requests
// as sequential calls, one round trip each; both times are printed.
//
// Run it with `cargo run --example pipelining`.

use std::time::Instant;

use courier_rpc::{service, Context, Router, Server, Status};

service! {
    /// Service 115: a number's square.
    pub mod squares(service = 115, name = "squares") {
        trait Squares;
        client SquaresClient;
        /// `n * n`.
        rpc SQUARE = 1: square(u32) -> u64;
    }
}

struct Squarer;

impl squares::Squares for Squarer {
    fn square(&self, _ctx: &Context, n: u32) -> Result<u64, Status> {
        Ok(u64::from(n) * u64::from(n))
    }
}

const CALLS: u32 = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.add_service(squares::service(Squarer));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router)?
        .spawn()?;
    let mut stub = squares::SquaresClient::connect(server.local_addr())?;

    // Pipelined: every request is queued (and written in one batch by the first wait)
    // before any answer is read.
    let started = Instant::now();
    let client = stub.client();
    let mut pending = Vec::new();
    for n in 0..CALLS {
        pending.push((n, client.send(&squares::SQUARE, &n)?));
    }
    for (n, handle) in pending.into_iter().rev() {
        check(n, client.wait(handle)?)?;
    }
    let pipelined = started.elapsed();

    // Sequential: one round trip per request.
    let started = Instant::now();
    for n in 0..CALLS {
        check(n, stub.square(&n)?)?;
    }
    let sequential = started.elapsed();

    println!("{CALLS} pipelined calls, collected in reverse order: {pipelined:?}");
    println!("{CALLS} sequential calls: {sequential:?}");
    server.shutdown()?;
    Ok(())
}

/// An error unless `square` is the square of `n`.
fn check(n: u32, square: u64) -> Result<(), String> {
    if square == u64::from(n) * u64::from(n) {
        Ok(())
    } else {
        Err(format!("the square of {n} is not {square}"))
    }
}

// Testing a service: without a socket, `Router::call` runs a method as a server would (the
// request and response go through their encodings, the handler's status comes back), and
// `Router::call_with` gives the handler a `Context` of the test's choosing, here with a
// deadline; over a real socket, a server on port 0 and the typed client.
//
// `cargo run --example testing` runs the checks and prints them; `cargo test --example
// testing` (or `cargo test`) runs them as the tests at the bottom of this file.

use std::error::Error;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use courier_rpc::{service, CallOptions, Code, Context, Metadata, Router, Server, Status};

service! {
    /// Service 125: items in stock.
    pub mod stock(service = 125, name = "stock") {
        trait Stock;
        client StockClient;
        /// Takes `n` items; answers how many are left, or FAILED_PRECONDITION when fewer
        /// than `n` are.
        rpc RESERVE = 1: reserve(u32) -> u32;
        /// Counts the items, slowly, on the worker pool; DEADLINE_EXCEEDED once the caller's
        /// deadline has passed.
        rpc(blocking) AUDIT = 2: audit(()) -> u32;
    }
}

struct Shelf {
    left: AtomicU32,
}

impl stock::Stock for Shelf {
    fn reserve(&self, _ctx: &Context, n: u32) -> Result<u32, Status> {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .map(|before| before - n)
            .map_err(|left| Status::failed_precondition(format!("{n} asked for, {left} left")))
    }

    fn audit(&self, ctx: &Context, (): ()) -> Result<u32, Status> {
        for _aisle in 0..5 {
            if ctx
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                return Err(Status::deadline_exceeded("audit interrupted"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(self.left.load(Ordering::SeqCst))
    }
}

/// A router serving a shelf of `items`.
fn router(items: u32) -> Router {
    let mut router = Router::new();
    router.add_service(stock::service(Shelf {
        left: AtomicU32::new(items),
    }));
    router
}

/// Prints `what` and its value; an error unless it is `want`.
fn check<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    println!("{what}: {got:?}");
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}"))
    }
}

/// Without a socket: `Router::call`.
fn in_process() -> Result<(), Box<dyn Error>> {
    let router = router(10);
    check("reserve 3 of 10", router.call(&stock::RESERVE, &3)?, 7)?;
    let refused = router.call(&stock::RESERVE, &8).map_err(|s| s.code);
    check("reserve 8 of 7", refused, Err(Code::FAILED_PRECONDITION))?;
    Ok(())
}

/// Without a socket, with a context: `Router::call_with` and a deadline.
fn with_deadline() -> Result<(), Box<dyn Error>> {
    let router = router(10);
    let now = Instant::now();
    let ctx = |deadline| Context::new(1, now, Some(deadline), Metadata::new());
    let in_time = router.call_with(&ctx(now + Duration::from_secs(5)), &stock::AUDIT, &())?;
    check("audit with 5 s to spare", in_time, 10)?;
    let late = router
        .call_with(&ctx(now), &stock::AUDIT, &())
        .map_err(|s| s.code);
    check(
        "audit past its deadline",
        late,
        Err(Code::DEADLINE_EXCEEDED),
    )?;
    Ok(())
}

/// Over a real socket: a server on a free port, the typed client.
fn over_socket() -> Result<(), Box<dyn Error>> {
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router(10))?
        .spawn()?;
    let mut client = stock::StockClient::connect(server.local_addr())?;
    check("reserve 4 of 10 over TCP", client.reserve(&4)?, 6)?;
    let refused = client.reserve(&7).map_err(|e| e.status().map(|s| s.code));
    check(
        "reserve 7 of 6 over TCP",
        refused,
        Err(Some(Code::FAILED_PRECONDITION)),
    )?;
    let options = CallOptions::default().with_deadline(Duration::from_secs(5));
    let audit = client.client().call_with(&stock::AUDIT, &(), &options)?;
    check("audit over TCP with 5 s to spare", audit, 6)?;
    server.shutdown()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    in_process()?;
    with_deadline()?;
    over_socket()?;
    println!("all checks passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_call() -> Result<(), Box<dyn Error>> {
        in_process()
    }

    #[test]
    fn router_call_with_a_deadline() -> Result<(), Box<dyn Error>> {
        with_deadline()
    }

    #[test]
    fn over_a_socket() -> Result<(), Box<dyn Error>> {
        over_socket()
    }
}

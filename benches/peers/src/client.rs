//! The load of `peer-client`: N unary echo calls of one payload, C at a time, by one of the
//! client kinds (one connection, or courier's balancers over several servers); every reply
//! is checked against the payload.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// What a load run did: calls answered with the payload, calls that failed (an error, or a
/// reply that differs from the payload), and the first failure's description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Calls answered with the payload, byte for byte.
    pub ok: u64,
    /// Calls that failed.
    pub errors: u64,
    /// What the first failure was.
    pub first_error: Option<String>,
}

impl Outcome {
    fn fail(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn check(&mut self, reply: Result<Bytes, String>, payload: &Bytes) {
        match reply {
            Ok(reply) if reply == *payload => self.ok += 1,
            Ok(reply) => self.fail(format!(
                "a reply of {} bytes differs from its {}-byte request",
                reply.len(),
                payload.len()
            )),
            Err(e) => self.fail(e),
        }
    }

    fn add(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The courier blocking client: one connection, `concurrency` calls in flight by pipelining
/// (send that many with `Client::send`, collect them with `Client::wait`, repeat) until
/// `calls` are done, on the calling thread. Stops after the first batch with a failure.
pub fn courier_blocking(
    client: &mut courier_rpc::Client,
    calls: u64,
    concurrency: usize,
    payload: &Bytes,
) -> Outcome {
    let mut outcome = Outcome::default();
    let mut done = 0u64;
    let mut pending = Vec::with_capacity(concurrency);
    while done < calls && outcome.errors == 0 {
        let batch = (calls - done).min(concurrency as u64);
        for _ in 0..batch {
            match client.send(&courier_rpc::echo::ECHO, payload) {
                Ok(p) => pending.push(p),
                Err(e) => outcome.fail(e.to_string()),
            }
        }
        for p in pending.drain(..) {
            outcome.check(client.wait(p).map_err(|e| e.to_string()), payload);
        }
        done += batch;
    }
    outcome
}

/// Calls made one at a time on the calling thread: `call(payload)` `calls` times, each reply
/// checked, until the first failure (which stops the load). The load of the courier
/// blocking `Client::call` and of the blocking `Balancer::call`.
pub fn one_at_a_time(
    calls: u64,
    payload: &Bytes,
    mut call: impl FnMut(&Bytes) -> Result<Bytes, String>,
) -> Outcome {
    let mut outcome = Outcome::default();
    for _ in 0..calls {
        outcome.check(call(payload), payload);
        if outcome.errors > 0 {
            break;
        }
    }
    outcome
}

/// One unary echo call with the courier blocking client (`Client::call`: send, then wait).
///
/// # Errors
/// The client's error, as text.
pub fn courier_call(client: &mut courier_rpc::Client, payload: &Bytes) -> Result<Bytes, String> {
    client
        .call(&courier_rpc::echo::ECHO, payload)
        .map_err(|e| e.to_string())
}

/// One unary echo call through the blocking balancer (`Balancer::call`: a server chosen by
/// the power of two choices, a pooled connection checked out and back in).
///
/// # Errors
/// The balancer's error, as text.
pub fn courier_balancer_call(
    balancer: &courier_rpc::client::balance::Balancer,
    payload: &Bytes,
) -> Result<Bytes, String> {
    balancer
        .call(&courier_rpc::echo::ECHO, payload)
        .map_err(|e| e.to_string())
}

/// An async client, cloned into each task of [`drive`]: one unary echo call.
pub trait Caller: Clone + Send + 'static {
    /// Sends `payload` and returns the reply's bytes, or the error as text.
    fn call(&mut self, payload: Bytes) -> impl Future<Output = Result<Bytes, String>> + Send;
}

struct Shared {
    calls: u64,
    next: AtomicU64,
    failed: AtomicBool,
}

/// Runs `calls` calls of `payload` on `concurrency` tokio tasks, each with its own clone of
/// `caller` (all sharing its one connection), each calling in a loop until the shared count
/// of calls started reaches `calls`. After the first failure no task starts another call.
/// Runs on the caller's runtime: `peer-client` uses a current-thread one.
pub async fn drive<C: Caller>(
    caller: C,
    calls: u64,
    concurrency: usize,
    payload: Bytes,
) -> Outcome {
    let shared = Arc::new(Shared {
        calls,
        next: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mut caller = caller.clone();
            let shared = Arc::clone(&shared);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                while !shared.failed.load(Ordering::Relaxed)
                    && shared.next.fetch_add(1, Ordering::Relaxed) < shared.calls
                {
                    outcome.check(caller.call(payload.clone()).await, &payload);
                    if outcome.errors > 0 {
                        shared.failed.store(true, Ordering::Relaxed);
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => total.add(outcome),
            Err(e) => total.fail(format!("a load task ended abnormally: {e}")),
        }
    }
    total
}

/// The tonic client: a generated `EchoClient` on one HTTP/2 connection (a `Channel` made by
/// `Endpoint::connect`, TCP_NODELAY on, tonic's default).
#[derive(Clone, Debug)]
pub struct Tonic(crate::grpc::echo_client::EchoClient<tonic::transport::Channel>);

impl Tonic {
    /// Connects to `http://addr`.
    ///
    /// # Errors
    /// The connect error.
    pub async fn connect(addr: SocketAddr) -> Result<Tonic, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        Ok(Tonic(crate::grpc::echo_client::EchoClient::new(channel)))
    }
}

impl Caller for Tonic {
    async fn call(&mut self, payload: Bytes) -> Result<Bytes, String> {
        self.0
            .echo(crate::grpc::Payload { data: payload })
            .await
            .map(|reply| reply.into_inner().data)
            .map_err(|status| status.to_string())
    }
}

/// The tarpc client: the generated `EchoClient` over one TCP connection (TCP_NODELAY on),
/// bincode in length-delimited frames, tarpc's default client configuration, its dispatch
/// task spawned on the current runtime.
#[derive(Clone, Debug)]
pub struct Tarpc(crate::rpc::EchoClient);

impl Tarpc {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// The connect error.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Tarpc> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let transport = tarpc::serde_transport::Transport::from((
            stream,
            tarpc::tokio_serde::formats::Bincode::default(),
        ));
        let client =
            crate::rpc::EchoClient::new(tarpc::client::Config::default(), transport).spawn();
        Ok(Tarpc(client))
    }
}

impl Caller for Tarpc {
    async fn call(&mut self, payload: Bytes) -> Result<Bytes, String> {
        self.0
            .echo(tarpc::context::current(), payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The courier async client (`courier_rpc::client::AsyncClient`, the courier-rpc crate's
/// feature `tokio`): a clone shares the one connection.
#[derive(Clone)]
pub struct CourierAsync(courier_rpc::client::AsyncClient);

impl CourierAsync {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// The connect error, as text.
    pub async fn connect(addr: SocketAddr) -> Result<CourierAsync, String> {
        let addr = addr.to_string();
        courier_rpc::client::AsyncClient::connect(addr.as_str())
            .await
            .map(CourierAsync)
            .map_err(|e| e.to_string())
    }
}

impl Caller for CourierAsync {
    async fn call(&mut self, payload: Bytes) -> Result<Bytes, String> {
        self.0
            .call(&courier_rpc::echo::ECHO, &payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The courier async balancer (`courier_rpc::client::balance::AsyncBalancer`, feature
/// `tokio`): a clone shares its connections (`connections_per_server` per server).
#[derive(Clone)]
pub struct CourierAsyncBalancer(courier_rpc::client::balance::AsyncBalancer);

impl CourierAsyncBalancer {
    /// Builds the balancer over `addrs` (their names `IP:PORT`) with `connections_per_server`
    /// connections per server and every other setting at its default, on the current
    /// runtime. No connection is opened here: the first calls to each server open them.
    ///
    /// # Errors
    /// The builder's error, as text (no address, an address given twice).
    pub async fn build(
        addrs: &[SocketAddr],
        connections_per_server: usize,
    ) -> Result<CourierAsyncBalancer, String> {
        courier_rpc::client::balance::BalancerBuilder::default()
            .connections_per_server(connections_per_server)
            .build_async(addrs.iter().map(ToString::to_string))
            .await
            .map(CourierAsyncBalancer)
            .map_err(|e| e.to_string())
    }

    /// The balancer's figures: attempts per server, retries.
    pub fn stats(&self) -> courier_rpc::client::balance::BalancerStats {
        self.0.stats()
    }
}

impl Caller for CourierAsyncBalancer {
    async fn call(&mut self, payload: Bytes) -> Result<Bytes, String> {
        self.0
            .call(&courier_rpc::echo::ECHO, &payload)
            .await
            .map_err(|e| e.to_string())
    }
}

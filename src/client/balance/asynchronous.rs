//! `AsyncBalancer`: the tokio balancing client (feature `tokio`): a few multiplexed
//! [`AsyncClient`] connections per server, shared by every task that calls through it, and a
//! task that checks each server's health.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::{timeout, timeout_at, Instant};

use super::policy::{BalancerStats, Health, Phase, Policy, Route};
use super::BalancerBuilder;
use crate::client::{AsyncClient, CallOptions, ClientError, MAX_WAIT};
use crate::service::{Message, Method};

/// The tokio balancing client (feature `tokio`): the async [`Balancer`](super::Balancer).
/// The same choice of server, health checks and retries (see the [module docs](super)),
/// over [`BalancerBuilder::connections_per_server`] connections per server (2), each an
/// [`AsyncClient`] that multiplexes any number of calls; calls take a server's connections
/// in turn.
///
/// Cheap to clone: clones share the connections, the health checks and the retry budget.
/// Built with [`BalancerBuilder::build_async`], in a tokio runtime with IO and time enabled;
/// its health checks run on a task of that runtime until the last clone is dropped.
///
/// # Examples
///
/// ```no_run
/// use bytes::Bytes;
/// use courier_rpc::client::balance::BalancerBuilder;
/// use courier_rpc::echo::ECHO;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let balancer = BalancerBuilder::default()
///     .build_async(["10.0.0.1:7879", "10.0.0.2:7879"])
///     .await?;
/// let answer = balancer.call(&ECHO, &Bytes::from("hi")).await?;
/// assert_eq!(answer, Bytes::from("hi"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AsyncBalancer {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    pools: Vec<Pool>,
    settings: BalancerBuilder,
    /// Woken when a server comes back (for [`BalancerBuilder::wait_for_ready`]).
    ready: Notify,
    /// Wakes the health task early: a server went out.
    kick: Arc<Notify>,
}

struct Pool {
    addrs: Vec<SocketAddr>,
    slots: Vec<Mutex<Option<AsyncClient>>>,
    next: AtomicUsize,
}

impl fmt::Debug for AsyncBalancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncBalancer")
            .field("stats", &self.stats())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl AsyncBalancer {
    pub(super) fn open(
        settings: BalancerBuilder,
        names: Vec<String>,
        addrs: Vec<Vec<SocketAddr>>,
    ) -> AsyncBalancer {
        let policy = Policy::new(
            names,
            settings.retry_budget,
            settings.max_attempts,
            super::seed(),
        );
        let pools = addrs
            .into_iter()
            .map(|addrs| Pool {
                addrs,
                slots: (0..settings.connections_per_server)
                    .map(|_| Mutex::new(None))
                    .collect(),
                next: AtomicUsize::new(0),
            })
            .collect();
        let kick = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            policy,
            pools,
            settings,
            ready: Notify::new(),
            kick: Arc::clone(&kick),
        });
        let interval = inner.settings.health_interval;
        tokio::spawn(health_task(Arc::downgrade(&inner), kick, interval));
        AsyncBalancer { inner }
    }

    /// Calls `method` on one server, as [`Balancer::call`](super::Balancer::call).
    ///
    /// # Errors
    /// As [`Balancer::call`](super::Balancer::call).
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_with(method, request, &CallOptions::default())
            .await
    }

    /// [`AsyncBalancer::call`] with a deadline and metadata, as
    /// [`Balancer::call_with`](super::Balancer::call_with).
    ///
    /// # Errors
    /// As [`Balancer::call`](super::Balancer::call).
    pub async fn call_with<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        self.inner.run(Route::Any, method, request, options).await
    }

    /// Calls `method` on the server that owns `key`, as
    /// [`Balancer::call_key`](super::Balancer::call_key).
    ///
    /// # Errors
    /// As [`Balancer::call_key`](super::Balancer::call_key).
    pub async fn call_key<Req: Message, Resp: Message>(
        &self,
        key: &[u8],
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_key_with(key, method, request, &CallOptions::default())
            .await
    }

    /// [`AsyncBalancer::call_key`] with a deadline and metadata.
    ///
    /// # Errors
    /// As [`Balancer::call_key`](super::Balancer::call_key).
    pub async fn call_key_with<Req: Message, Resp: Message>(
        &self,
        key: &[u8],
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        self.inner
            .run(Route::Key(key), method, request, options)
            .await
    }

    /// The index of the server that owns `key`, in the order the names were given.
    pub fn owner(&self, key: &[u8]) -> usize {
        self.inner.policy.shards().owner(key)
    }

    /// The servers' names, in the order given to the builder.
    pub fn names(&self) -> &[String] {
        self.inner.policy.shards().names()
    }

    /// Server `index`'s health now.
    ///
    /// # Panics
    /// If `index` is not below the number of servers.
    pub fn health(&self, index: usize) -> Health {
        self.inner.policy.health(index)
    }

    /// The balancer's figures: requests, attempts, retries, and each server's.
    pub fn stats(&self) -> BalancerStats {
        self.inner.policy.stats()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The health task wakes, finds the balancer gone, and ends (closing its connections).
        self.kick.notify_one();
    }
}

impl Inner {
    async fn run<Req: Message, Resp: Message>(
        &self,
        route: Route<'_>,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        if options.deadline == Some(Duration::ZERO) {
            return Err(ClientError::Timeout);
        }
        let wait = options
            .deadline
            .unwrap_or(self.settings.client.read_timeout)
            .min(MAX_WAIT);
        let start = Instant::now();
        let until = start.checked_add(wait).unwrap_or(start);
        self.policy.begin_request();
        let mut avoid = None;
        let mut last = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let index = self.pick(route, avoid, until).await?;
            if let Some(last) = last.take() {
                let left = until.saturating_duration_since(Instant::now());
                match self.policy.before_retry(index, avoid, attempt, left) {
                    None => return last,
                    Some(pause) if pause.is_zero() => {}
                    Some(pause) => tokio::time::sleep(pause).await,
                }
            }
            let started = self.policy.start(index, attempt);
            let (result, phase) = self
                .attempt(index, method, request, options, until, attempt > 1)
                .await;
            let ended = started.finish(&result, phase);
            if ended.taken_out {
                self.taken_out(index).await;
            }
            if !ended.retryable {
                return result;
            }
            last = Some(result);
            avoid = Some(index);
        }
    }

    async fn pick(
        &self,
        route: Route<'_>,
        avoid: Option<usize>,
        until: Instant,
    ) -> Result<usize, ClientError> {
        // The common case first: a server is there, no waiter is registered.
        if let Ok(index) = self.policy.pick(route, avoid) {
            return Ok(index);
        }
        loop {
            let readmitted = self.ready.notified();
            tokio::pin!(readmitted);
            readmitted.as_mut().enable();
            match self.policy.pick(route, avoid) {
                Ok(index) => return Ok(index),
                Err(no) => {
                    if !self.settings.wait_for_ready || Instant::now() >= until {
                        return Err(self.policy.no_server_error(&no));
                    }
                    // Woken by a readmission, or past the deadline (then refused above).
                    let _ = timeout_at(until, readmitted).await;
                }
            }
        }
    }

    /// One attempt on server `index`, as the blocking balancer's: the time left is measured
    /// once the connection is in hand.
    async fn attempt<Req: Message, Resp: Message>(
        &self,
        index: usize,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
        until: Instant,
        retry: bool,
    ) -> (Result<Resp, ClientError>, Phase) {
        let client = match self.connection(index, until).await {
            Ok(client) => client,
            Err((err, phase)) => return (Err(err), phase),
        };
        let now = Instant::now();
        if now >= until {
            return (Err(ClientError::Timeout), Phase::Call);
        }
        let result = if options.deadline.is_some() || retry {
            let mut this = options.clone();
            this.deadline = Some(until - now);
            client.call_telling_sent(method, request, &this).await
        } else {
            client.call_telling_sent(method, request, options).await
        };
        if result.is_err() && client.is_draining() {
            self.policy.saw_goaway(index);
        }
        match result {
            Ok(response) => (Ok(response), Phase::Call),
            Err((err, true)) => (Err(err), Phase::Call),
            // Unsent for the caller's own reasons (its deadline, a request that does not
            // encode) or with the server's word (UNAVAILABLE after a GOAWAY): as sent.
            Err((
                err @ (ClientError::Timeout
                | ClientError::Status(_)
                | ClientError::Encode(_)
                | ClientError::Message(_)),
                false,
            )) => (Err(err), Phase::Call),
            // Unsent because no connection to the server would take it: the connection was
            // found closed (it ended since it was checked out, as when a draining server
            // closes it) or its reconnection after a GOAWAY failed. Nothing reached the
            // server, so it counts as a failed connect: not processed, tried elsewhere.
            Err((err, false)) => (Err(err), Phase::Connect),
        }
    }

    /// The next connection of server `index`'s pool, in turn; a new one when its place is
    /// empty or holds a connection that ended or brought a GOAWAY (retired alone: see the
    /// blocking balancer's `checkout`). The place's lock is not held while connecting: two
    /// calls may then both connect, and the second keeps the first's connection.
    async fn connection(
        &self,
        index: usize,
        until: Instant,
    ) -> Result<AsyncClient, (ClientError, Phase)> {
        let pool = &self.pools[index];
        let turn = pool.next.fetch_add(1, Ordering::Relaxed) % pool.slots.len();
        {
            let mut slot = pool.slots[turn].lock().await;
            if let Some(client) = slot.as_ref() {
                let (alive, draining) = client.alive_and_draining();
                if alive && !draining {
                    return Ok(client.clone());
                }
                if draining {
                    self.policy.saw_goaway(index);
                }
                *slot = None;
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((ClientError::Timeout, Phase::Call));
        }
        let config = self.settings.client.clone();
        let cut = left < config.connect_timeout;
        let timeout = config.connect_timeout.min(left);
        let client = match AsyncClient::open(pool.addrs.clone(), config.connect_timeout(timeout))
            .await
        {
            Ok(client) => client,
            Err(ClientError::Timeout) if cut => return Err((ClientError::Timeout, Phase::Call)),
            Err(err) => return Err((err, Phase::Connect)),
        };
        self.policy.connected(index);
        let mut slot = pool.slots[turn].lock().await;
        match slot.as_ref() {
            Some(other) if other.alive_and_draining() == (true, false) => Ok(other.clone()),
            _ => {
                *slot = Some(client.clone());
                Ok(client)
            }
        }
    }

    /// Server `index` went out: its connections are let go (calls on them finish), and the
    /// health task checks it at once.
    async fn taken_out(&self, index: usize) {
        self.kick.notify_one();
        self.let_go(index).await;
    }

    /// One health check of server `index`, as the blocking balancer's.
    async fn check(&self, index: usize, slot: &mut Option<AsyncClient>) {
        let limit = self.settings.health_timeout;
        if let Some(client) = slot.as_ref() {
            let (alive, draining) = client.alive_and_draining();
            if draining {
                self.policy.saw_goaway(index);
            }
            if !alive || draining {
                *slot = None;
            }
        }
        if slot.is_none() {
            let config = self
                .settings
                .client
                .clone()
                .connect_timeout(limit)
                .read_timeout(limit);
            match AsyncClient::open(self.pools[index].addrs.clone(), config).await {
                Ok(client) => {
                    self.policy.connected(index);
                    *slot = Some(client);
                }
                Err(err) => {
                    if self.policy.connect_failed(index, &err) {
                        self.let_go(index).await;
                    }
                    return;
                }
            }
        }
        let Some(client) = slot.as_ref() else {
            return;
        };
        let result = match timeout(limit, client.ping()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout),
        };
        match result {
            Ok(_) => {
                if self.policy.readmit(index) {
                    self.ready.notify_waiters();
                }
            }
            Err(err) => {
                *slot = None;
                if self.policy.eject(index, format!("health check: {err}")) {
                    self.let_go(index).await;
                }
            }
        }
    }

    /// Lets server `index`'s pooled connections go.
    async fn let_go(&self, index: usize) {
        for slot in &self.pools[index].slots {
            *slot.lock().await = None;
        }
    }
}

/// The health task: checks every server each `interval` (sooner when a server goes out),
/// until the balancer is dropped.
async fn health_task(inner: Weak<Inner>, kick: Arc<Notify>, interval: Duration) {
    let mut slots: Vec<Option<AsyncClient>> = Vec::new();
    loop {
        let _ = timeout(interval, kick.notified()).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        slots.resize_with(inner.pools.len(), || None);
        for (index, slot) in slots.iter_mut().enumerate() {
            inner.check(index, slot).await;
        }
    }
}

impl crate::client::Caller for AsyncBalancer {
    type Call<'a, Resp: 'a> = crate::client::AsyncCall<'a, Resp>;

    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp> {
        Box::pin(AsyncBalancer::call(self, method, request))
    }
}

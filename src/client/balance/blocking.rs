//! [`Balancer`]: the blocking balancing client: a pool of [`Client`] connections per server,
//! shared by every thread that calls through it, and a thread that checks each server's
//! health.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::policy::{classify, BalancerStats, Health, NoServer, Outcome, Phase, Policy, Route};
use super::BalancerBuilder;
use crate::client::{later, CallOptions, Client, ClientError};
use crate::service::{Message, Method};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A blocking client over several servers: each request goes to one of them, chosen per
/// request, and a request known not to have been processed is retried. See the
/// [module docs](super) for how servers are chosen, checked, taken out and brought back,
/// and which requests are retried.
///
/// Cheap to clone: clones share the connections, the health checks and the retry budget.
/// Any number of threads may call through it at once; each call takes one connection of its
/// server's pool for its duration (opening one if none is idle), so a server gets as many
/// connections as the calls outstanding on it, and keeps up to
/// [`BalancerBuilder::max_idle_per_server`] of them open between calls.
///
/// # Examples
///
/// ```no_run
/// use bytes::Bytes;
/// use courier_rpc::client::balance::Balancer;
/// use courier_rpc::echo::ECHO;
///
/// let balancer = Balancer::builder().build(["10.0.0.1:7879", "10.0.0.2:7879", "10.0.0.3:7879"])?;
/// // Any server: the less loaded of two drawn at random.
/// assert_eq!(balancer.call(&ECHO, &Bytes::from("hi"))?, Bytes::from("hi"));
/// // Figures: attempts, retries, each server's health and load.
/// println!("{:?}", balancer.stats());
/// # Ok::<(), courier_rpc::client::ClientError>(())
/// ```
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    pools: Vec<Pool>,
    settings: BalancerBuilder,
    /// Counts readmissions: calls that wait for a server ([`BalancerBuilder::wait_for_ready`])
    /// wait on it.
    ready: (Mutex<u64>, Condvar),
    health: Arc<Wake>,
}

struct Pool {
    addrs: Vec<SocketAddr>,
    idle: Mutex<Vec<Client>>,
}

/// Wakes the health thread early (a server went out) or ends it (the balancer is gone).
#[derive(Default)]
struct Wake {
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Wake {
    /// Waits up to `timeout` or until woken; true once the balancer is gone.
    fn wait(&self, timeout: Duration) -> bool {
        let state = lock(&self.state);
        let (mut state, _) = self
            .cv
            .wait_timeout_while(state, timeout, |(closed, kicked)| !*closed && !*kicked)
            .unwrap_or_else(PoisonError::into_inner);
        state.1 = false;
        state.0
    }

    fn kick(&self) {
        lock(&self.state).1 = true;
        self.cv.notify_all();
    }

    fn close(&self) {
        lock(&self.state).0 = true;
        self.cv.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.health.close();
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("stats", &self.stats())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A builder with every default.
    pub fn builder() -> BalancerBuilder {
        BalancerBuilder::default()
    }

    pub(super) fn open(
        settings: BalancerBuilder,
        names: Vec<String>,
        addrs: Vec<Vec<SocketAddr>>,
    ) -> Balancer {
        let seed = super::seed();
        let policy = Policy::new(names, settings.retry_budget, settings.max_attempts, seed);
        let pools = addrs
            .into_iter()
            .map(|addrs| Pool {
                addrs,
                idle: Mutex::new(Vec::new()),
            })
            .collect();
        let health = Arc::new(Wake::default());
        let inner = Arc::new(Inner {
            policy,
            pools,
            settings,
            ready: (Mutex::new(0), Condvar::new()),
            health: Arc::clone(&health),
        });
        let weak = Arc::downgrade(&inner);
        let interval = inner.settings.health_interval;
        let spawned = thread::Builder::new()
            .name("courier-balancer-health".into())
            .spawn(move || health_loop(&weak, &health, interval));
        if let Err(err) = spawned {
            log::warn!("balancer: no health-check thread ({err}): servers come back only when a request to them succeeds");
        }
        Balancer { inner }
    }

    /// Calls `method` on one server, the less loaded of two drawn at random among those up.
    /// A request known not processed (UNAVAILABLE, a GOAWAY, no connection) is retried on
    /// another server, within the attempt limit, the retry budget and the read timeout.
    ///
    /// # Errors
    /// The last attempt's [`ClientError`]; [`ClientError::Timeout`] once the read timeout
    /// (or the deadline) has passed across the attempts.
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_with(method, request, &CallOptions::default())
    }

    /// [`Balancer::call`] with a deadline and metadata. The deadline bounds the whole call,
    /// every attempt and pause included; each attempt sends the time left as its deadline.
    ///
    /// # Errors
    /// As [`Balancer::call`].
    pub fn call_with<Req: Message, Resp: Message>(
        &self,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        self.inner.run(Route::Any, method, request, options)
    }

    /// Calls `method` on the server that owns `key` ([`Rendezvous`](super::Rendezvous) over
    /// the names given to the builder): for data partitioned by key, such as kv shards. It
    /// never goes to another server. A request known not processed is retried on that
    /// server (after a pause: 10 ms, doubling up to 1 s), within the attempt limit, the
    /// retry budget and the deadline.
    ///
    /// # Errors
    /// As [`Balancer::call`]; [`ClientError::Status`] UNAVAILABLE, naming the server and why
    /// it is out, when the key's server is out (and, with
    /// [`BalancerBuilder::wait_for_ready`], did not come back before the deadline). Nothing
    /// was sent then.
    pub fn call_key<Req: Message, Resp: Message>(
        &self,
        key: &[u8],
        method: &Method<Req, Resp>,
        request: &Req,
    ) -> Result<Resp, ClientError> {
        self.call_key_with(key, method, request, &CallOptions::default())
    }

    /// [`Balancer::call_key`] with a deadline and metadata.
    ///
    /// # Errors
    /// As [`Balancer::call_key`].
    pub fn call_key_with<Req: Message, Resp: Message>(
        &self,
        key: &[u8],
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        self.inner.run(Route::Key(key), method, request, options)
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

impl Inner {
    fn run<Req: Message, Resp: Message>(
        &self,
        route: Route<'_>,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, ClientError> {
        if options.deadline == Some(Duration::ZERO) {
            return Err(ClientError::Timeout);
        }
        let start = Instant::now();
        let until = later(
            start,
            options
                .deadline
                .unwrap_or(self.settings.client.read_timeout),
        );
        self.policy.begin_request();
        let mut avoid = None;
        let mut attempt = 0u32;
        let mut now = start;
        loop {
            attempt += 1;
            let index = self.pick(route, avoid, until)?;
            if attempt > 1 {
                now = Instant::now();
            }
            if now >= until {
                return Err(ClientError::Timeout);
            }
            let mut this = options.clone();
            this.deadline = options.deadline.map(|_| until - now);
            let started = self.policy.start(index, attempt > 1);
            let (result, phase) = self.attempt(index, method, request, &this, until);
            let (outcome, failed) = classify(&result, phase);
            started.finish(if failed { result.as_ref().err() } else { None });
            if failed {
                self.taken_out(index);
            }
            if outcome != Outcome::NotProcessed || !self.policy.may_retry(outcome, attempt) {
                return result;
            }
            if matches!(route, Route::Key(_)) || self.policy.len() == 1 {
                let pause = self.policy.backoff(attempt);
                let left = until.saturating_duration_since(Instant::now());
                if pause >= left {
                    return result;
                }
                thread::sleep(pause);
            }
            avoid = Some(index);
        }
    }

    /// The server for the next attempt; with `wait_for_ready`, waits for a key's server to
    /// come back, until `until`.
    fn pick(
        &self,
        route: Route<'_>,
        avoid: Option<usize>,
        until: Instant,
    ) -> Result<usize, ClientError> {
        // The common case first: a server is there, and the readmission count is not read.
        if let Ok(index) = self.policy.pick(route, avoid) {
            return Ok(index);
        }
        loop {
            let seen = *lock(&self.ready.0);
            match self.policy.pick(route, avoid) {
                Ok(index) => return Ok(index),
                Err(no) => self.wait_ready(&no, seen, until)?,
            }
        }
    }

    fn wait_ready(&self, no: &NoServer, seen: u64, until: Instant) -> Result<(), ClientError> {
        let now = Instant::now();
        if !self.settings.wait_for_ready || now >= until {
            return Err(self.policy.no_server_error(no));
        }
        let readmitted = lock(&self.ready.0);
        drop(
            self.ready
                .1
                .wait_timeout_while(readmitted, until - now, |n| *n == seen)
                .unwrap_or_else(PoisonError::into_inner),
        );
        Ok(())
    }

    fn attempt<Req: Message, Resp: Message>(
        &self,
        index: usize,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
        until: Instant,
    ) -> (Result<Resp, ClientError>, Phase) {
        let mut client = match self.checkout(index) {
            Some(client) => client,
            None => match self.connect(index, until) {
                Ok(client) => client,
                Err(err) => return (Err(err), Phase::Connect),
            },
        };
        let result = client.call_with(method, request, options);
        self.checkin(index, client);
        (result, Phase::Call)
    }

    /// An idle connection to server `index` that is still good: its server neither closed it
    /// nor sent GOAWAY on it while it sat idle (one `recv(2)` each, [`Client::check_alive`]).
    fn checkout(&self, index: usize) -> Option<Client> {
        loop {
            let mut client = lock(&self.pools[index].idle).pop()?;
            if client.check_alive().is_ok() && !client.is_draining() {
                return Some(client);
            }
            if client.is_draining() && self.policy.drain(index) {
                self.taken_out(index);
            }
        }
    }

    fn connect(&self, index: usize, until: Instant) -> Result<Client, ClientError> {
        let left = until.saturating_duration_since(Instant::now());
        let config = self.settings.client.clone();
        let timeout = config.connect_timeout.min(left);
        Client::open(
            self.pools[index].addrs.clone(),
            config.connect_timeout(timeout),
        )
    }

    fn checkin(&self, index: usize, client: Client) {
        if client.is_draining() {
            if self.policy.drain(index) {
                self.taken_out(index);
            }
            return;
        }
        if client.core().check_usable().is_err() {
            return;
        }
        let mut idle = lock(&self.pools[index].idle);
        if idle.len() < self.settings.max_idle_per_server {
            idle.push(client);
        }
    }

    /// Server `index` went out: its idle connections are closed, and the health thread
    /// checks it at once.
    fn taken_out(&self, index: usize) {
        lock(&self.pools[index].idle).clear();
        self.health.kick();
    }

    /// One health check of server `index`: a PING on the check's own connection (opened
    /// when there is none). Answered: the server is (back) in. Not: it is taken out.
    fn check(&self, index: usize, slot: &mut Option<Client>) {
        let timeout = self.settings.health_timeout;
        let result = match slot {
            Some(client)
                if client.core().check_usable().is_ok() || client.core().may_reconnect() =>
            {
                client.ping()
            }
            _ => {
                let config = self
                    .settings
                    .client
                    .clone()
                    .connect_timeout(timeout)
                    .read_timeout(timeout);
                match Client::open(self.pools[index].addrs.clone(), config) {
                    Ok(client) => slot.insert(client).ping(),
                    Err(err) => Err(err),
                }
            }
        };
        match result {
            Ok(_) => {
                if self.policy.readmit(index) {
                    *lock(&self.ready.0) += 1;
                    self.ready.1.notify_all();
                }
            }
            Err(err) => {
                *slot = None;
                if self.policy.eject(index, format!("health check: {err}")) {
                    lock(&self.pools[index].idle).clear();
                }
            }
        }
    }
}

/// The health thread: checks every server each `interval` (sooner when a server goes out),
/// until the balancer is dropped.
fn health_loop(inner: &Weak<Inner>, wake: &Wake, interval: Duration) {
    let mut slots: Vec<Option<Client>> = Vec::new();
    loop {
        if wake.wait(interval) {
            return;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        slots.resize_with(inner.pools.len(), || None);
        for (index, slot) in slots.iter_mut().enumerate() {
            inner.check(index, slot);
        }
    }
}

impl crate::client::Caller for Balancer {
    type Call<'a, Resp: 'a> = Result<Resp, ClientError>;

    fn call_method<'a, Req: Message + Sync, Resp: Message + Send + 'a>(
        &'a mut self,
        method: &'a Method<Req, Resp>,
        request: &'a Req,
    ) -> Self::Call<'a, Resp> {
        self.call(method, request)
    }
}

//! [`Balancer`]: the blocking balancing client: a pool of [`Client`] connections per server,
//! shared by every thread that calls through it, and a thread that checks each server's
//! health.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use super::policy::{BalancerStats, Health, NoServer, Phase, Policy, Route};
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
    /// another server, within the attempt limit, the retry budget and the read timeout
    /// counted from the call (the first attempt waits up to the read timeout; a retry sends
    /// the time left as its deadline).
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

    /// [`Balancer::call`] with a deadline and metadata. The deadline is counted from the
    /// call: every attempt and pause must fit in it, and each attempt sends the time left
    /// (measured once its connection is in hand) as its deadline.
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
        let until = later(
            Instant::now(),
            options
                .deadline
                .unwrap_or(self.settings.client.read_timeout),
        );
        self.policy.begin_request();
        let mut avoid = None;
        let mut last = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let index = self.pick(route, avoid, until)?;
            if let Some(last) = last.take() {
                let left = until.saturating_duration_since(Instant::now());
                match self.policy.before_retry(index, avoid, attempt, left) {
                    None => return last,
                    Some(pause) if pause.is_zero() => {}
                    Some(pause) => thread::sleep(pause),
                }
            }
            let started = self.policy.start(index, attempt);
            let (result, phase) = self.attempt(index, method, request, options, until, attempt > 1);
            let ended = started.finish(&result, phase);
            if ended.taken_out {
                self.taken_out(index);
            }
            if !ended.retryable {
                return result;
            }
            last = Some(result);
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

    /// One attempt on server `index`: a pooled connection (or a new one), then the call,
    /// sent with the time left as its deadline, measured once the connection is in hand. A
    /// call without a deadline sends none on its first attempt, and the time left of the read
    /// timeout on a retry.
    fn attempt<Req: Message, Resp: Message>(
        &self,
        index: usize,
        method: &Method<Req, Resp>,
        request: &Req,
        options: &CallOptions,
        until: Instant,
        retry: bool,
    ) -> (Result<Resp, ClientError>, Phase) {
        let mut client = match self.checkout(index) {
            Some(client) => client,
            None => match self.connect(index, until) {
                Ok(client) => client,
                Err((err, phase)) => return (Err(err), phase),
            },
        };
        let now = Instant::now();
        if now >= until {
            self.checkin(index, client);
            return (Err(ClientError::Timeout), Phase::Call);
        }
        let result = if options.deadline.is_some() || retry {
            let mut this = options.clone();
            this.deadline = Some(until - now);
            client.call_with(method, request, &this)
        } else {
            client.call_with(method, request, options)
        };
        self.checkin(index, client);
        (result, Phase::Call)
    }

    /// An idle connection to server `index` that is still good: its server neither closed it
    /// nor sent GOAWAY on it while it sat idle (one `recv(2)` each, [`Client::check_alive`]).
    /// One that brought a GOAWAY is retired alone: the server also sends one to a connection
    /// left idle too long, so whether it is draining is for the next connect to tell.
    fn checkout(&self, index: usize) -> Option<Client> {
        loop {
            let mut client = lock(&self.pools[index].idle).pop()?;
            let alive = client.check_alive().is_ok();
            if client.is_draining() {
                self.policy.saw_goaway(index);
            } else if alive {
                return Some(client);
            }
        }
    }

    /// A new connection to server `index`, within what is left before `until`. A connect
    /// that runs out of that time fails the call with [`ClientError::Timeout`] without taking
    /// the server out (the caller's deadline, not the server, ended it).
    fn connect(&self, index: usize, until: Instant) -> Result<Client, (ClientError, Phase)> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((ClientError::Timeout, Phase::Call));
        }
        let config = self.settings.client.clone();
        let cut = left < config.connect_timeout;
        let timeout = config.connect_timeout.min(left);
        match Client::open(
            self.pools[index].addrs.clone(),
            config.connect_timeout(timeout),
        ) {
            Ok(client) => {
                self.policy.connected(index);
                Ok(client)
            }
            Err(ClientError::Timeout) if cut => Err((ClientError::Timeout, Phase::Call)),
            Err(err) => Err((err, Phase::Connect)),
        }
    }

    fn checkin(&self, index: usize, client: Client) {
        if client.is_draining() {
            self.policy.saw_goaway(index);
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
    /// when there is none, or when the one it has was closed or brought a GOAWAY). Answered:
    /// the server is (back) in. Not: it is taken out (as draining after a GOAWAY).
    fn check(&self, index: usize, slot: &mut Option<Client>) {
        if let Some(client) = slot {
            let alive = client.check_alive().is_ok();
            if client.is_draining() {
                self.policy.saw_goaway(index);
                *slot = None;
            } else if !alive {
                *slot = None;
            }
        }
        let timeout = self.settings.health_timeout;
        let result = match slot {
            Some(client) => client.ping(),
            None => {
                let config = self
                    .settings
                    .client
                    .clone()
                    .connect_timeout(timeout)
                    .read_timeout(timeout);
                match Client::open(self.pools[index].addrs.clone(), config) {
                    Ok(client) => {
                        self.policy.connected(index);
                        slot.insert(client).ping()
                    }
                    Err(err) => {
                        if self.policy.connect_failed(index, &err) {
                            lock(&self.pools[index].idle).clear();
                        }
                        return;
                    }
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

//! The balancer's decisions, shared by the blocking and the async balancer and doing no IO:
//! each server's health and outstanding requests, which server a request goes to (power of
//! two choices, or the owner of its key), which failures may be retried, and the retry
//! budget. The drivers ([`Balancer`](super::Balancer) and, with feature `tokio`,
//! `AsyncBalancer`) own the connections and the waiting.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::budget::{Balance, RetryBudget};
use super::shard::{mix64, Rendezvous};
use crate::client::{ClientError, ProtocolError};
use crate::proto::{Code, Status};

/// A server's health as its balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Takes new requests.
    Up,
    /// It is shutting down or restarting: a connection to it brought a GOAWAY, and then it
    /// refused a new connection (a draining courier server closes its listener at once). No
    /// new request goes to it until a health check connects to it again and its PING is
    /// answered. (A GOAWAY alone retires only its connection: a server also sends one to a
    /// connection left idle past its idle timeout.)
    Draining,
    /// A connection to it failed (could not be made, or broke), or a health check's PING
    /// was not answered: no new request goes to it until a health check succeeds. When every
    /// server of a [`Balancer`](super::Balancer) is out, requests are spread over all of
    /// them anyway ("panic mode", as Envoy's), and a request that succeeds there brings its
    /// server back, so that a whole cluster that failed at once comes back as soon as it can
    /// answer.
    Ejected,
}

impl Health {
    /// The state's name: `up`, `draining` or `ejected`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Draining => "draining",
            Health::Ejected => "ejected",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One server's figures in [`BalancerStats`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerStats {
    /// Its name: its address as given to the builder.
    pub name: String,
    /// Its health now.
    pub health: Health,
    /// Why it was last taken out, while it is out.
    pub reason: Option<String>,
    /// Requests sent to it and not yet answered, now.
    pub outstanding: usize,
    /// Attempts sent to it (first attempts and retries), since the balancer was built.
    pub attempts: u64,
    /// Attempts to it that failed on the connection: it could not be made, or it broke.
    pub failures: u64,
    /// Times it was taken out (ejected or draining).
    pub ejections: u64,
}

/// A balancer's figures since it was built: [`Balancer::stats`](super::Balancer::stats).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BalancerStats {
    /// Requests made through it (each counted once, however many attempts it took).
    pub requests: u64,
    /// Attempts sent to a server, or a connection tried for one: first attempts and retries.
    pub attempts: u64,
    /// Retries made (attempts after the first of their request).
    pub retries: u64,
    /// Retries the retry budget refused: their request ended with its last error.
    pub retries_refused: u64,
    /// Retry tokens left in the budget.
    pub budget_tokens: f64,
    /// Each server, in the order given to the builder.
    pub servers: Vec<ServerStats>,
}

/// What an attempt's error says about its request, and about its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Answered (OK or another status), or refused before sending: the request is over.
    Done,
    /// Known not processed (PROTOCOL.md Sections 10 and 14): UNAVAILABLE (a server's, or
    /// the client's own for a request after a GOAWAY's last id), or no connection could be
    /// made. Safe to retry.
    NotProcessed,
    /// May have been processed: the connection broke after the request was sent, or its
    /// deadline passed. Never retried.
    Unknown,
}

/// Where an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Opening a connection (TCP, TLS, AUTH): nothing was sent.
    Connect,
    /// On a connection.
    Call,
}

/// Sorts an attempt's result: what it means for the request, and whether the server's
/// connection failed (the server is then taken out).
pub(super) fn classify<T>(result: &Result<T, ClientError>, phase: Phase) -> (Outcome, bool) {
    let Err(err) = result else {
        return (Outcome::Done, false);
    };
    if phase == Phase::Connect {
        return (Outcome::NotProcessed, true);
    }
    match err {
        ClientError::Status(status) if status.code == Code::UNAVAILABLE => {
            (Outcome::NotProcessed, false)
        }
        // A response that does not decode is that call's trouble, not the connection's.
        ClientError::Status(_)
        | ClientError::Encode(_)
        | ClientError::Message(_)
        | ClientError::Protocol(ProtocolError::Message(_)) => (Outcome::Done, false),
        ClientError::Timeout => (Outcome::Unknown, false),
        _ => (Outcome::Unknown, true),
    }
}

/// Which server a request goes to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route<'a> {
    /// Any server: the less loaded of two chosen at random.
    Any,
    /// The server that owns this key.
    Key(&'a [u8]),
}

/// No server may take the request now.
#[derive(Debug)]
pub(super) struct NoServer {
    /// The server the key belongs to (keyed requests only).
    pub(super) owner: Option<usize>,
}

struct HealthEntry {
    health: Health,
    reason: Option<String>,
}

struct Endpoint {
    name: String,
    /// Whether [`HealthEntry::health`] is [`Health::Up`], readable without the lock: a
    /// request's choice of server reads it, only changes of health take the lock.
    up: AtomicBool,
    /// A connection to it brought a GOAWAY since the last connection made to it: a connect
    /// it then refuses means it is draining, not broken.
    goaway_seen: AtomicBool,
    outstanding: AtomicUsize,
    attempts: AtomicU64,
    failures: AtomicU64,
    ejections: AtomicU64,
    health: Mutex<HealthEntry>,
}

/// The shared state of one balancer's decisions.
pub(super) struct Policy {
    endpoints: Vec<Endpoint>,
    shards: Rendezvous,
    balance: Balance,
    max_attempts: u32,
    /// SplitMix64's state: each draw adds the golden-ratio increment and mixes.
    rng: AtomicU64,
    requests: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    retries_refused: AtomicU64,
}

/// An attempt in progress on one server ([`Policy::start`]): outstanding there until it is
/// finished or dropped.
pub(super) struct Attempt<'a> {
    policy: &'a Policy,
    index: usize,
    /// Its request's attempt number, 1 for the first.
    number: u32,
    /// Started while the server was out (panic mode): a success brings it back.
    panic: bool,
}

/// How an attempt ended, for its driver ([`Attempt::finish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ended {
    /// The attempt took its server out: its pooled connections go, and the health check
    /// runs now.
    pub(super) taken_out: bool,
    /// Its request may be tried again ([`Policy::before_retry`] decides whether it is): known
    /// not processed, below the attempt limit.
    pub(super) retryable: bool,
}

impl Attempt<'_> {
    /// The attempt ended with `result`, its error (if any) met in `phase`. A connection that
    /// failed takes the server out (see [`Policy::connect_failed`] for a connect). A success
    /// of an attempt made while the server was ejected (panic mode) brings it back;
    /// otherwise only a health check does.
    pub(super) fn finish<T>(self, result: &Result<T, ClientError>, phase: Phase) -> Ended {
        let (policy, index) = (self.policy, self.index);
        let endpoint = &policy.endpoints[index];
        let (outcome, failed) = classify(result, phase);
        let taken_out = match result {
            Err(err) if failed => {
                endpoint.failures.fetch_add(1, Ordering::Relaxed);
                match phase {
                    Phase::Connect => policy.connect_failed(index, err),
                    Phase::Call => policy.eject(index, err.to_string()),
                }
            }
            // Only a server's answer brings it back (not a timeout, nor a request refused
            // before sending).
            _ if !self.panic
                || policy.is_up(index)
                || !matches!(result, Ok(_) | Err(ClientError::Status(_))) =>
            {
                false
            }
            _ => {
                let mut entry = policy.entry(index);
                if entry.health == Health::Ejected {
                    log::info!("{}: back in (a request succeeded)", endpoint.name);
                    policy.set(index, &mut entry, Health::Up, None);
                }
                false
            }
        };
        Ended {
            taken_out,
            retryable: outcome == Outcome::NotProcessed && self.number < policy.max_attempts,
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.policy.endpoints[self.index]
            .outstanding
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// First retry's pause when a retry goes back to the same server: 10 ms, doubled per retry
/// up to [`BACKOFF_MAX`], each ±20% at random (gRPC's connection backoff has the same
/// shape: initial, multiplier, jitter, maximum).
const BACKOFF_BASE: Duration = Duration::from_millis(10);
/// The longest pause between two attempts at the same server: 1 s.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Policy {
    pub(super) fn new(
        names: Vec<String>,
        budget: RetryBudget,
        max_attempts: u32,
        seed: u64,
    ) -> Policy {
        let endpoints = names
            .iter()
            .map(|name| Endpoint {
                name: name.clone(),
                up: AtomicBool::new(true),
                goaway_seen: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                attempts: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                ejections: AtomicU64::new(0),
                health: Mutex::new(HealthEntry {
                    health: Health::Up,
                    reason: None,
                }),
            })
            .collect();
        Policy {
            endpoints,
            shards: Rendezvous::new(names),
            balance: Balance::new(budget),
            max_attempts: max_attempts.max(1),
            rng: AtomicU64::new(seed),
            requests: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(super) fn name(&self, index: usize) -> &str {
        &self.endpoints[index].name
    }

    pub(super) fn shards(&self) -> &Rendezvous {
        &self.shards
    }

    fn random(&self) -> u64 {
        mix64(
            self.rng
                .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
                .wrapping_add(0x9e37_79b9_7f4a_7c15),
        )
    }

    pub(super) fn health(&self, index: usize) -> Health {
        self.entry(index).health
    }

    fn is_up(&self, index: usize) -> bool {
        self.endpoints[index].up.load(Ordering::Relaxed)
    }

    fn entry(&self, index: usize) -> std::sync::MutexGuard<'_, HealthEntry> {
        self.endpoints[index]
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets server `index`'s health (under its lock, `entry`).
    fn set(&self, index: usize, entry: &mut HealthEntry, health: Health, reason: Option<String>) {
        entry.health = health;
        entry.reason = reason;
        self.endpoints[index]
            .up
            .store(health == Health::Up, Ordering::Relaxed);
    }

    /// A new request: its deposit in the retry budget.
    pub(super) fn begin_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.balance.deposit();
    }

    /// The server for the next attempt of a request. `avoid`: the server its last attempt
    /// failed on, which a request that may go anywhere avoids when another will do.
    ///
    /// Any server: two servers drawn at random among those [`Health::Up`], and the one with
    /// fewer outstanding requests (Mitzenmacher's power of two choices, as Finagle's and
    /// tower's `p2c` balancers); when none is up, among all of them (panic mode).
    ///
    /// # Errors
    /// [`NoServer`] for a key whose owner is not up.
    pub(super) fn pick(&self, route: Route<'_>, avoid: Option<usize>) -> Result<usize, NoServer> {
        if let Route::Key(key) = route {
            let owner = self.shards.owner(key);
            return if self.is_up(owner) {
                Ok(owner)
            } else {
                Err(NoServer { owner: Some(owner) })
            };
        }
        let n = self.endpoints.len();
        if n == 1 {
            return Ok(0);
        }
        let others = |i: usize| self.is_up(i) && Some(i) != avoid;
        let chosen = self
            .two_choices(n, others)
            .or_else(|| self.two_choices(n, |i| self.is_up(i)))
            // Panic mode: every server is out.
            .or_else(|| self.two_choices(n, |i| Some(i) != avoid));
        Ok(chosen.unwrap_or(0))
    }

    /// Among the servers `0..n` that `eligible` takes: none, the one, or the less loaded of
    /// two drawn at random. Allocates nothing.
    fn two_choices(&self, n: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let count = (0..n).filter(|&i| eligible(i)).count();
        let nth = |rank: usize| (0..n).filter(|&i| eligible(i)).nth(rank);
        match count {
            0 => None,
            1 => nth(0),
            _ => {
                let r = self.random();
                // Two distinct ranks: the second skips over the first.
                let a = (r % count as u64) as usize;
                let mut b = ((r >> 32) % (count as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (nth(a)?, nth(b)?);
                let load_a = self.endpoints[a].outstanding.load(Ordering::Relaxed);
                let load_b = self.endpoints[b].outstanding.load(Ordering::Relaxed);
                Some(if load_b < load_a { b } else { a })
            }
        }
    }

    /// An attempt starts on server `index`: counted as outstanding until the [`Attempt`]
    /// returned is finished or dropped (a caller that gives up in the middle, such as a
    /// dropped async call, leaves no count behind).
    pub(super) fn start(&self, index: usize, number: u32) -> Attempt<'_> {
        let endpoint = &self.endpoints[index];
        endpoint.outstanding.fetch_add(1, Ordering::Relaxed);
        endpoint.attempts.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if number > 1 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        Attempt {
            policy: self,
            index,
            number,
            panic: !self.is_up(index),
        }
    }

    /// A connection to server `index` brought a GOAWAY (that connection is retired; the
    /// server is not taken out for it: the server also sends GOAWAY to a connection idle
    /// for too long).
    pub(super) fn saw_goaway(&self, index: usize) {
        self.endpoints[index]
            .goaway_seen
            .store(true, Ordering::Relaxed);
    }

    /// A connection to server `index` was made.
    pub(super) fn connected(&self, index: usize) {
        self.endpoints[index]
            .goaway_seen
            .store(false, Ordering::Relaxed);
    }

    /// A connect to server `index` (a request's or a health check's) failed with `err`: it
    /// is taken out, as draining when one of its connections brought a GOAWAY since the
    /// last connection made, else as ejected. Returns whether it was up.
    pub(super) fn connect_failed(&self, index: usize, err: &ClientError) -> bool {
        if self.endpoints[index].goaway_seen.load(Ordering::Relaxed) {
            self.drain(index)
        } else {
            self.eject(index, err.to_string())
        }
    }

    /// Takes server `index` out after a failure. Returns whether it was up.
    pub(super) fn eject(&self, index: usize, reason: String) -> bool {
        let endpoint = &self.endpoints[index];
        let mut entry = self.entry(index);
        match entry.health {
            // Out already, for its drain: it stays draining until it is back.
            Health::Draining => false,
            Health::Ejected => {
                self.set(index, &mut entry, Health::Ejected, Some(reason));
                false
            }
            Health::Up => {
                endpoint.ejections.fetch_add(1, Ordering::Relaxed);
                log::warn!("{}: taken out: {reason}", endpoint.name);
                self.set(index, &mut entry, Health::Ejected, Some(reason));
                true
            }
        }
    }

    /// Server `index` sent GOAWAY. Returns whether it was up.
    pub(super) fn drain(&self, index: usize) -> bool {
        let endpoint = &self.endpoints[index];
        let mut entry = self.entry(index);
        if entry.health != Health::Up {
            return false;
        }
        endpoint.ejections.fetch_add(1, Ordering::Relaxed);
        log::info!("{}: draining (GOAWAY): no new requests", endpoint.name);
        self.set(
            index,
            &mut entry,
            Health::Draining,
            Some("server sent GOAWAY".to_owned()),
        );
        true
    }

    /// A health check of server `index` succeeded. Returns whether it was out.
    pub(super) fn readmit(&self, index: usize) -> bool {
        let mut entry = self.entry(index);
        if entry.health == Health::Up {
            return false;
        }
        log::info!(
            "{}: back in (health check answered)",
            self.endpoints[index].name
        );
        self.set(index, &mut entry, Health::Up, None);
        true
    }

    /// Whether attempt `number` (2 or more) of a request, at server `index`, goes, after
    /// its last attempt failed at `avoid` in a way [`Ended::retryable`] allows, with `left`
    /// before the request's deadline. `Some(pause)` when it goes: after `pause`, zero unless
    /// it goes back to the same server ([`Policy::backoff`]); a token of the retry budget is
    /// taken for it then. `None` when the pause would not fit in `left`, or the budget has no
    /// token (counted as a retry refused): the request ends with its last attempt's result.
    pub(super) fn before_retry(
        &self,
        index: usize,
        avoid: Option<usize>,
        number: u32,
        left: Duration,
    ) -> Option<Duration> {
        let pause = if Some(index) == avoid {
            self.backoff(number - 1)
        } else {
            Duration::ZERO
        };
        if pause >= left {
            return None;
        }
        if !self.balance.withdraw() {
            self.retries_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(pause)
    }

    /// The pause before retry `retry` (1 for the first) at the same server.
    fn backoff(&self, retry: u32) -> Duration {
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(BACKOFF_MAX);
        // ±20%: a factor in 0.8..1.2.
        let jitter = 0.8 + 0.4 * (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        exp.mul_f64(jitter)
    }

    /// The error of a request no server may take.
    pub(super) fn no_server_error(&self, no: &NoServer) -> ClientError {
        let message = match no.owner {
            Some(owner) => {
                let entry = self.entry(owner);
                format!(
                    "{} (the key's server) is {}{}: request not sent",
                    self.endpoints[owner].name,
                    entry.health,
                    entry
                        .reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )
            }
            None => "no server is up: request not sent".to_owned(),
        };
        ClientError::Status(Status::new(Code::UNAVAILABLE, message))
    }

    pub(super) fn stats(&self) -> BalancerStats {
        BalancerStats {
            requests: self.requests.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            retries_refused: self.retries_refused.load(Ordering::Relaxed),
            budget_tokens: self.balance.tokens(),
            servers: self
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let entry = self.entry(i);
                    ServerStats {
                        name: e.name.clone(),
                        health: entry.health,
                        reason: entry.reason.clone(),
                        outstanding: e.outstanding.load(Ordering::Relaxed),
                        attempts: e.attempts.load(Ordering::Relaxed),
                        failures: e.failures.load(Ordering::Relaxed),
                        ejections: e.ejections.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(n: usize) -> Policy {
        let names = (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect();
        Policy::new(names, RetryBudget::default(), 3, 1)
    }

    #[test]
    fn two_choices_prefers_the_less_loaded() {
        let p = policy(3);
        // Server 0 has 10 outstanding: it loses every draw it is in.
        let busy: Vec<Attempt<'_>> = (0..10).map(|_| p.start(0, 1)).collect();
        let mut picks = [0u32; 3];
        for _ in 0..3000 {
            picks[p.pick(Route::Any, None).expect("a server")] += 1;
        }
        assert_eq!(picks[0], 0, "{picks:?}");
        // 1 and 2 tie at 0 outstanding: each wins about half.
        assert!(picks[1] > 1200 && picks[2] > 1200, "{picks:?}");
        drop(busy);
        assert_eq!(p.stats().servers[0].outstanding, 0);
    }

    #[test]
    fn a_server_out_gets_nothing_until_readmitted_unless_all_are_out() {
        let p = policy(3);
        assert!(p.eject(1, "refused".into()));
        assert!(p.drain(2));
        for _ in 0..100 {
            assert_eq!(p.pick(Route::Any, None).expect("a server"), 0);
        }
        // Panic mode: every server out, all are tried.
        p.eject(0, "refused".into());
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[p.pick(Route::Any, None).expect("a server")] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert!(p.readmit(2));
        assert_eq!(p.pick(Route::Any, None).expect("a server"), 2);
    }

    #[test]
    fn a_drained_server_stays_draining_and_only_panic_mode_successes_readmit() {
        let p = policy(3);
        // A GOAWAY, then a refused connect: draining, not ejected, and a failure after
        // that does not turn it into ejected.
        p.saw_goaway(1);
        assert!(p.connect_failed(1, &ClientError::Closed));
        assert_eq!(p.health(1), Health::Draining);
        assert!(!p.eject(1, "refused".into()));
        assert_eq!(p.health(1), Health::Draining);
        // An attempt started while server 2 was up succeeds after it was ejected (by a
        // broken connection): it stays out until a health check.
        let attempt = p.start(2, 1);
        assert!(p.eject(2, "reset".into()));
        assert!(!attempt.finish(&Ok(()), Phase::Call).taken_out);
        assert_eq!(p.health(2), Health::Ejected);
        // One started in panic mode (while it was out) that times out does not; one answered
        // does.
        p.start(2, 1)
            .finish(&Err::<(), _>(ClientError::Timeout), Phase::Call);
        assert_eq!(p.health(2), Health::Ejected);
        let attempt = p.start(2, 1);
        attempt.finish(&Ok(()), Phase::Call);
        assert_eq!(p.health(2), Health::Up);
        // A new connection clears the GOAWAY: the next refusal is an ejection.
        p.connected(0);
        assert!(p.connect_failed(0, &ClientError::Closed));
        assert_eq!(p.health(0), Health::Ejected);
    }

    #[test]
    fn a_retry_avoids_the_server_that_failed_when_another_is_up() {
        let p = policy(2);
        for _ in 0..50 {
            assert_eq!(p.pick(Route::Any, Some(0)).expect("a server"), 1);
        }
    }

    #[test]
    fn a_key_goes_to_its_owner_or_nowhere() {
        let p = policy(3);
        let owner = p.shards().owner(b"k");
        assert_eq!(p.pick(Route::Key(b"k"), None).expect("owner"), owner);
        p.eject(owner, "refused".into());
        let err = p.pick(Route::Key(b"k"), None).expect_err("owner out");
        assert_eq!(err.owner, Some(owner));
        let message = p.no_server_error(&err).to_string();
        assert!(message.contains(p.name(owner)), "{message}");
        assert!(message.contains("ejected (refused)"), "{message}");
    }

    #[test]
    fn only_requests_known_not_processed_are_retried() {
        let unavailable = Err::<(), _>(ClientError::Status(Status::new(Code::UNAVAILABLE, "")));
        let not_found = Err::<(), _>(ClientError::Status(Status::new(Code::NOT_FOUND, "")));
        let closed = Err::<(), _>(ClientError::Closed);
        assert_eq!(
            classify(&unavailable, Phase::Call),
            (Outcome::NotProcessed, false)
        );
        assert_eq!(classify(&not_found, Phase::Call), (Outcome::Done, false));
        assert_eq!(classify(&closed, Phase::Call), (Outcome::Unknown, true));
        assert_eq!(
            classify(&Err::<(), _>(ClientError::Timeout), Phase::Call),
            (Outcome::Unknown, false)
        );
        assert_eq!(
            classify(&closed, Phase::Connect),
            (Outcome::NotProcessed, true)
        );
        let bad_message = Err::<(), _>(ClientError::Protocol(ProtocolError::Message(
            crate::service::MessageError::invalid("not a u64"),
        )));
        assert_eq!(classify(&bad_message, Phase::Call), (Outcome::Done, false));
        let p = policy(1);
        let ended = |number, result: &Result<(), ClientError>| {
            p.start(0, number).finish(result, Phase::Call)
        };
        assert!(!ended(1, &closed).retryable);
        assert!(ended(1, &unavailable).retryable);
        assert!(ended(2, &unavailable).retryable);
        assert!(!ended(3, &unavailable).retryable, "3 attempts at most");
        // A retry to another server goes at once; back to the same one, after a pause; and
        // neither when the pause does not fit in the time left.
        assert_eq!(
            p.before_retry(1, Some(0), 2, Duration::from_secs(1)),
            Some(Duration::ZERO)
        );
        let pause = p
            .before_retry(0, Some(0), 2, Duration::from_secs(1))
            .expect("goes");
        assert!(pause >= Duration::from_millis(8) && pause <= Duration::from_millis(12));
        assert_eq!(
            p.before_retry(0, Some(0), 2, Duration::from_millis(5)),
            None
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let p = policy(1);
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(8) && first <= Duration::from_millis(12));
        let fourth = p.backoff(4);
        assert!(fourth >= Duration::from_millis(64) && fourth <= Duration::from_millis(96));
        assert!(p.backoff(30) <= Duration::from_millis(1200));
    }
}

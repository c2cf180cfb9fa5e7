//! The tokio balancing client (feature `tokio`) over real servers on 127.0.0.1: calls from
//! many tasks spread over three servers, a server drained in the middle of the load, keyed
//! calls on their owners, and the retry budget against servers that refuse everything.
#![cfg(feature = "tokio")]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier_rpc::client::balance::{BalancerBuilder, Health};
use courier_rpc::client::ClientError;
use courier_rpc::proto::Code;
use courier_rpc::server::{RunningServer, Server};
use courier_rpc::service::{Method, Router};
use courier_rpc::Status;

/// Answers its request; served by every server here.
const WORK: Method<Bytes, Bytes> = Method::new(40, 1, "work.Do");

/// A server that keeps every WORK request body it is sent (or refuses each with
/// UNAVAILABLE).
fn work_server(refuse: bool) -> (RunningServer, Arc<Mutex<Vec<Bytes>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    let mut router = Router::new();
    router.register(WORK, move |_: &courier_rpc::Context, body: Bytes| {
        kept.lock().expect("lock").push(body.clone());
        if refuse {
            Err(Status::new(Code::UNAVAILABLE, "refusing every request"))
        } else {
            Ok(body)
        }
    });
    (support::start(Server::builder(), router), seen)
}

fn names(servers: &[(RunningServer, Arc<Mutex<Vec<Bytes>>>)]) -> Vec<String> {
    servers
        .iter()
        .map(|(s, _)| s.local_addr().to_string())
        .collect()
}

fn seen(servers: &[(RunningServer, Arc<Mutex<Vec<Bytes>>>)]) -> Vec<usize> {
    servers
        .iter()
        .map(|(_, seen)| seen.lock().expect("lock").len())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_many_tasks_spread_and_survive_a_drain() {
    let mut servers: Vec<_> = (0..3).map(|_| work_server(false)).collect();
    let balancer = BalancerBuilder::default()
        .health_interval(Duration::from_millis(100))
        .build_async(names(&servers))
        .await
        .expect("build");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let balancer = balancer.clone();
            let done = Arc::clone(&done);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                // Bounded: at most 2,000 calls per task.
                for i in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = Bytes::from(format!("{t}-{i}"));
                    let answer = balancer.call(&WORK, &body).await;
                    assert_eq!(answer.expect("no call fails"), body);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_for = |at_least: u64| {
        let done = Arc::clone(&done);
        async move {
            let until = tokio::time::Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::Relaxed) < at_least {
                assert!(tokio::time::Instant::now() < until, "no progress");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    wait_for(1500).await;
    // Server 1 drains: GOAWAY on every connection, answers what it owes, and stops.
    let drained = servers.remove(1);
    let handle = drained.0.handle();
    tokio::task::spawn_blocking(move || handle.drain(Duration::from_secs(5)))
        .await
        .expect("drain");
    // The drain ends when the server has answered what it owed and closed every connection.
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while support::counter(&drained.0, "connections_open") > 0 {
        assert!(tokio::time::Instant::now() < until, "the drain did not end");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_drain = drained.1.lock().expect("lock").len();
    let after_drain = done.load(Ordering::Relaxed);
    // The load goes on after the drain, on the two others.
    wait_for(after_drain + 1500).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("caller task");
    }
    let stats = balancer.stats();
    let mut counts = seen(&servers);
    counts.insert(1, drained.1.lock().expect("lock").len());
    eprintln!(
        "{} calls from 20 tasks, server 1 drained after {after_drain}: per server {counts:?}, {} retries; server 1 {:?}",
        stats.requests, stats.retries, stats.servers[1]
    );
    assert_eq!(
        counts[1], at_drain,
        "server 1 took requests after its drain"
    );
    assert!(counts.iter().all(|&c| c > 200), "{counts:?}");
    assert_ne!(stats.servers[1].health, Health::Up, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_calls_reach_only_the_owner_of_their_key() {
    let servers: Vec<_> = (0..3).map(|_| work_server(false)).collect();
    let balancer = BalancerBuilder::default()
        .build_async(names(&servers))
        .await
        .expect("build");
    for i in 0..600 {
        let key = Bytes::from(format!("user:{i}"));
        let answer = balancer.call_key(&key, &WORK, &key).await.expect("call");
        assert_eq!(answer, key);
    }
    for (index, (_, seen)) in servers.iter().enumerate() {
        let seen = seen.lock().expect("lock");
        assert!(seen.len() > 100, "server {index} got {} keys", seen.len());
        for key in seen.iter() {
            assert_eq!(balancer.owner(key), index, "{key:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_attempts_when_every_server_refuses() {
    let servers: Vec<_> = (0..3).map(|_| work_server(true)).collect();
    let balancer = BalancerBuilder::default()
        .build_async(names(&servers))
        .await
        .expect("build");
    for _ in 0..200 {
        match balancer.call(&WORK, &Bytes::new()).await {
            Err(ClientError::Status(s)) => assert_eq!(s.code, Code::UNAVAILABLE),
            other => panic!("expected UNAVAILABLE, got {other:?}"),
        }
    }
    let served: usize = seen(&servers).iter().sum();
    let stats = balancer.stats();
    eprintln!(
        "every server refusing, 200 requests: {served} attempts reached the servers ({} retries, {} refused by the budget)",
        stats.retries, stats.retries_refused
    );
    assert_eq!(served as u64, stats.attempts);
    assert!(stats.attempts <= 200 + 10 + 40, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_leaves_nothing_outstanding() {
    // One server whose answers take 300 ms (on a worker), so every call below is dropped
    // while it waits.
    let mut router = Router::new();
    router.register_blocking(WORK, |_: &courier_rpc::Context, body: Bytes| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(body)
    });
    let server = support::start(Server::builder().workers(4), router);
    let balancer = BalancerBuilder::default()
        .build_async([server.local_addr().to_string()])
        .await
        .expect("build");
    let late = Bytes::from_static(b"late");
    for _ in 0..8 {
        let call = balancer.call(&WORK, &late);
        assert!(tokio::time::timeout(Duration::from_millis(20), call)
            .await
            .is_err());
    }
    let stats = balancer.stats();
    assert_eq!(stats.servers[0].attempts, 8, "{stats:?}");
    assert_eq!(stats.servers[0].outstanding, 0, "{stats:?}");
    // And the server is still up and answers.
    let body = Bytes::from_static(b"on time");
    assert_eq!(balancer.call(&WORK, &body).await.expect("call"), body);
}

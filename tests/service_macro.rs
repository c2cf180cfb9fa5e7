//! Services declared with `service!` over loopback: the typed stub against the server trait,
//! blocking methods on the worker pool, `?` on io and message errors, owned and shared state,
//! and the ids a server refuses to be built with.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier_rpc::service::RouteError;
use courier_rpc::{
    service, Bytes, CallOptions, Client, ClientError, Code, Context, Message, Method, Router,
    Server, Status,
};

service! {
    /// A test service: numbers and a file.
    pub mod numbers(service = 50, name = "numbers") {
        /// The server side.
        trait Numbers;
        /// The typed client.
        client NumbersClient;
        /// Doubles a number; OUT_OF_RANGE on overflow.
        rpc DOUBLE = 1: double(u32) -> u32;
        /// Whether a number is even, decoded from a nested payload with `?`.
        rpc EVEN = 2: even(Bytes) -> bool;
        /// Reads a file: `?` on its io::Error.
        rpc(blocking) READ = 3: read(String) -> Bytes;
        /// How many calls so far, on the worker pool, with the thread's name.
        rpc(blocking) CALLS = 4: calls(()) -> String;
    }
}

#[derive(Default)]
struct Impl {
    calls: AtomicU32,
}

impl numbers::Numbers for Impl {
    fn double(&self, _ctx: &Context, n: u32) -> Result<u32, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        n.checked_mul(2)
            .ok_or_else(|| Status::out_of_range(format!("{n} doubled overflows")))
    }
    fn even(&self, _ctx: &Context, payload: Bytes) -> Result<bool, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let n = u64::decode(payload)?;
        Ok(n % 2 == 0)
    }
    fn read(&self, _ctx: &Context, path: String) -> Result<Bytes, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::from(std::fs::read(path)?))
    }
    fn calls(&self, _ctx: &Context, (): ()) -> Result<String, Status> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let thread = std::thread::current().name().unwrap_or("?").to_owned();
        Ok(format!("{n} {thread}"))
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    match result {
        Err(ClientError::Status(s)) => s.code,
        other => panic!("expected a status, got {other:?}"),
    }
}

#[test]
fn the_stub_calls_the_trait_over_a_socket() -> Result<(), Box<dyn std::error::Error>> {
    let state = Arc::new(Impl::default());
    let mut router = Router::new();
    router.add_service(numbers::shared(Arc::clone(&state)));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router)?
        .spawn()?;
    let mut stub = numbers::NumbersClient::connect(server.local_addr())?;

    assert_eq!(stub.double(&21)?, 42);
    assert_eq!(code(stub.double(&u32::MAX)), Code::OUT_OF_RANGE);
    assert!(stub.even(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 8]))?);
    assert!(!stub.even(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9]))?);
    // A nested payload of the wrong length: MessageError -> INVALID_ARGUMENT.
    assert_eq!(
        code(stub.even(&Bytes::from_static(&[1, 2]))),
        Code::INVALID_ARGUMENT
    );

    let dir = std::env::temp_dir().join(format!("courier-macro-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("data");
    std::fs::write(&file, b"on disk")?;
    assert_eq!(
        stub.read(&file.display().to_string())?,
        Bytes::from_static(b"on disk")
    );
    // io::ErrorKind::NotFound -> NOT_FOUND.
    let missing = dir.join("missing").display().to_string();
    assert_eq!(code(stub.read(&missing)), Code::NOT_FOUND);
    std::fs::remove_dir_all(&dir)?;

    // Blocking methods run on the worker pool; state is the one shared Arc.
    let answer = stub.calls(&())?;
    let (count, thread) = answer.split_once(' ').expect("two words");
    assert!(thread.starts_with("courier-worker"), "{answer}");
    assert_eq!(count.parse::<u32>()?, state.calls.load(Ordering::Relaxed));
    assert_eq!(count, "8");

    // The stub borrows a client too, and hands it back for the rest of its API.
    let mut client = stub.into_inner();
    let mut borrowed = numbers::NumbersClient::new(&mut client);
    assert_eq!(borrowed.double(&1)?, 2);
    let options = CallOptions::default().with_deadline(Duration::from_secs(5));
    assert_eq!(
        borrowed
            .client()
            .call_with(&numbers::DOUBLE, &4, &options)?,
        8
    );
    assert_eq!(numbers::DOUBLE.name, "numbers.double");
    assert_eq!((numbers::SERVICE, numbers::CALLS.method), (50, 4));
    server.shutdown()?;
    Ok(())
}

#[test]
fn the_same_ids_twice_refuse_to_build_naming_both() {
    const TWIN: Method<u32, u32> = Method::new(50, 1, "other.twin");
    let mut router = Router::new();
    router.add_service(numbers::service(Impl::default()));
    router.register(TWIN, |_ctx, n: u32| Ok(n));
    let expected = RouteError::Duplicate {
        service: 50,
        method: 1,
        first: "numbers.double",
        second: "other.twin",
    };
    assert_eq!(router.check(), Err(expected.clone()));
    // The first registration stays.
    assert_eq!(router.call(&numbers::DOUBLE, &3), Ok(6));
    let err = Server::builder()
        .addr("127.0.0.1:0".parse().expect("addr"))
        .bind(router)
        .map(|_| ())
        .expect_err("a router with a duplicate must not serve");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "other.twin and numbers.double are both registered as service 50 method 1"
    );
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RouteError>());
    assert_eq!(inner, Some(&expected));
}

#[test]
fn a_method_name_with_a_space_refuses_to_build() {
    const SPACED: Method<u32, u32> = Method::new(51, 1, "my service.twin");
    let mut router = Router::new();
    router.register(SPACED, |_ctx, n: u32| Ok(n));
    let err = Server::builder()
        .addr("127.0.0.1:0".parse().expect("addr"))
        .bind(router)
        .map(|_| ())
        .expect_err("a method named with a space must not serve");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RouteError>());
    let expected = RouteError::BadName {
        service: 51,
        method: 1,
        name: "my service.twin",
    };
    assert_eq!(inner, Some(&expected));
    assert!(err.to_string().contains("no spaces"), "{err}");
}

#[test]
fn a_name_taken_twice_or_kept_by_the_server_refuses_to_build() {
    const ONE: Method<u32, u32> = Method::new(52, 1, "dup.Same");
    const TWO: Method<u32, u32> = Method::new(52, 2, "DUP.same");
    const STATS: Method<u32, u32> = Method::new(53, 1, "admin.Stats");
    const UNKNOWN: Method<u32, u32> = Method::new(53, 2, "unknown");
    let mut router = Router::new();
    router.register(ONE, |_ctx, n: u32| Ok(n));
    router.register(TWO, |_ctx, n: u32| Ok(n));
    assert_eq!(
        router.check(),
        Err(RouteError::NameTaken {
            name: "DUP.same",
            first: Some((52, 1)),
            second: (52, 2),
        })
    );
    for kept in [STATS, UNKNOWN] {
        let mut router = Router::new();
        router.register(kept, |_ctx, n: u32| Ok(n));
        let err = Server::builder()
            .addr("127.0.0.1:0".parse().expect("addr"))
            .bind(router)
            .map(|_| ())
            .expect_err("a name the server keeps must not serve");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<RouteError>());
        let expected = RouteError::NameTaken {
            name: kept.name,
            first: None,
            second: (kept.service, kept.method),
        };
        assert_eq!(inner, Some(&expected));
        assert!(err.to_string().contains("keeps for itself"), "{err}");
    }
}

#[test]
fn a_method_in_service_zero_refuses_to_build() {
    const MINE: Method<(), ()> = Method::new(0, 1, "mine.stats");
    let mut router = Router::new();
    router.register(MINE, |_ctx, ()| Ok(()));
    let err = Server::builder()
        .addr("127.0.0.1:0".parse().expect("addr"))
        .bind(router)
        .map(|_| ())
        .expect_err("service 0 is the admin service's");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .starts_with("mine.stats is registered as service 0 method 1, which is admin.Stats;"),
        "{err}"
    );
}

#[test]
fn a_request_that_does_not_encode_is_not_sent() -> Result<(), Box<dyn std::error::Error>> {
    use courier_rpc::kv::{SetRequest, SET};
    let mut router = Router::new();
    courier_rpc::kv::register(&mut router, Arc::new(courier_rpc::kv::Store::new()));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router)?
        .spawn()?;
    let mut client = Client::connect(server.local_addr())?;
    let long = SetRequest {
        key: Bytes::from(vec![b'k'; 70_000]),
        value: Bytes::new(),
    };
    match client.call(&SET, &long) {
        Err(ClientError::Message(err)) => assert!(err.to_string().contains("u16"), "{err}"),
        other => panic!("expected ClientError::Message, got {other:?}"),
    }
    // Nothing half-sent: the connection still works.
    let ok = SetRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
    };
    client.call(&SET, &ok)?;
    assert_eq!(server.stats().get("requests_OK"), Some(1));
    server.shutdown()?;
    Ok(())
}

service! {
    /// Names that could clash with what the macro generates or calls.
    pub mod awkward(service = 51, name = "awkward") {
        /// A trait named like a type parameter.
        trait S;
        /// A stub named like one too.
        client C;
        /// Named like `Arc::clone`.
        rpc CLONE = 1: clone(u8) -> u8;
        /// Named like `Into::into`.
        rpc INTO = 2: into(u8) -> u8;
        /// A method on its way out.
        #[deprecated = "use clone"]
        rpc OLD = 3: old(u8) -> u8;
    }
}

struct Awkward;

#[allow(deprecated)]
impl awkward::S for Awkward {
    fn clone(&self, _ctx: &Context, n: u8) -> Result<u8, Status> {
        Ok(n + 1)
    }
    fn into(&self, _ctx: &Context, n: u8) -> Result<u8, Status> {
        Ok(n + 2)
    }
    fn old(&self, _ctx: &Context, n: u8) -> Result<u8, Status> {
        Ok(n + 3)
    }
}

#[test]
#[allow(deprecated)]
fn methods_named_like_arc_and_prelude_methods_call_the_trait() {
    let mut router = Router::new();
    router.add_service(awkward::service(Awkward));
    assert_eq!(router.call(&awkward::CLONE, &1), Ok(2));
    assert_eq!(router.call(&awkward::INTO, &1), Ok(3));
    assert_eq!(router.call(&awkward::OLD, &1), Ok(4));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse().expect("addr"))
        .bind(router)
        .expect("bind")
        .spawn()
        .expect("spawn");
    let mut stub = awkward::C::connect(server.local_addr()).expect("connect");
    assert_eq!(stub.clone(&10).expect("clone"), 11);
    // `stub.into(..)` would find `Into::into` first (it takes `self` by value).
    assert_eq!(awkward::C::into(&mut stub, &10).expect("into"), 12);
    server.shutdown().expect("shutdown");
}

#[test]
fn a_call_past_its_deadline_is_not_run() {
    let mut router = Router::new();
    router.add_service(numbers::shared(Arc::new(Impl::default())));
    let past = std::time::Instant::now();
    let ctx = Context::new(1, past, Some(past), courier_rpc::Metadata::new());
    let err = router
        .call_with(&ctx, &numbers::DOUBLE, &2)
        .expect_err("the deadline has passed");
    assert_eq!(err.code, Code::DEADLINE_EXCEEDED);
    let later = Some(past + Duration::from_secs(60));
    let ctx = Context::new(2, past, later, courier_rpc::Metadata::new());
    assert_eq!(router.call_with(&ctx, &numbers::DOUBLE, &2), Ok(4));
}

/// The same typed stub over the async client: each method returns a future of the result,
/// with the same statuses as the blocking stub's; the stub connects itself
/// (`connect_async`) or wraps a clone of a client that other tasks share.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_calls_the_trait_through_the_async_client(
) -> Result<(), Box<dyn std::error::Error>> {
    let state = Arc::new(Impl::default());
    let mut router = Router::new();
    router.add_service(numbers::shared(Arc::clone(&state)));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router)?
        .spawn()?;

    let mut stub = numbers::NumbersClient::connect_async(server.local_addr()).await?;
    assert_eq!(stub.double(&21).await?, 42);
    assert_eq!(code(stub.double(&u32::MAX).await), Code::OUT_OF_RANGE);
    assert!(
        stub.even(&Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 8]))
            .await?
    );
    assert_eq!(
        code(stub.even(&Bytes::from_static(&[1, 2])).await),
        Code::INVALID_ARGUMENT
    );
    // A blocking method: the future waits for the worker pool's answer.
    let answer = stub.calls(&()).await?;
    assert!(answer
        .split_once(' ')
        .expect("two words")
        .1
        .starts_with("courier-worker"));

    // Stubs over clones of one client, in tasks of their own, share its one connection.
    let client = stub.into_inner();
    let mut tasks = Vec::new();
    for n in 0..16u32 {
        let mut stub = numbers::NumbersClient::new(client.clone());
        tasks.push(tokio::spawn(async move { stub.double(&n).await }));
    }
    for (n, task) in (0..16u32).zip(tasks) {
        assert_eq!(task.await??, n * 2);
    }
    // Five calls above (`calls` counts itself) and sixteen here: every one ran once.
    assert_eq!(state.calls.load(Ordering::Relaxed), 21);
    let mut client = client;
    let mut borrowed = numbers::NumbersClient::new(&mut client);
    assert_eq!(borrowed.double(&5).await?, 10);
    server.shutdown()?;
    Ok(())
}

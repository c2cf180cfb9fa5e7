// A user directory: a service declared with `service!` whose messages are serde types sent as
// CBOR. It answers NOT_FOUND and ALREADY_EXISTS, counts its users, and searches them on the
// worker pool (`rpc(blocking)`), slowly, giving up with DEADLINE_EXCEEDED once the caller's
// deadline (`Context::deadline`) has passed.
//
// Run it with `cargo run --example user_directory`. With `-- --serve 127.0.0.1:7900` (any
// IP:PORT; port 0 picks a free one) it runs no client: it prints `listening on ADDR` and serves
// the directory until it is stopped (Ctrl-C, SIGTERM), for a generic client such as
// `courier-cli` to call (`courier-cli --addr 127.0.0.1:7900 list`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use courier_rpc::{service, CallOptions, Cbor, ClientError, Code, Context, Router, Server, Status};
use serde::{Deserialize, Serialize};

/// A user's id, given by the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// A user to create; names are unique.
#[derive(Debug, Serialize, Deserialize)]
pub struct NewUser {
    pub name: String,
    pub email: String,
}

/// A user of the directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: String,
}

/// The users whose name contains `name_contains`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Query {
    pub name_contains: String,
}

service! {
    /// Service 110: users by id and by name.
    pub mod directory(service = 110, name = "directory") {
        trait Directory;
        client DirectoryClient;
        /// Adds a user; ALREADY_EXISTS when the name is taken.
        rpc CREATE = 1: create(Cbor<NewUser>) -> Cbor<UserId>;
        /// A user by id, or NOT_FOUND.
        rpc GET = 2: get(Cbor<UserId>) -> Cbor<User>;
        /// How many users there are.
        rpc COUNT = 3: count(()) -> u64;
        /// The users matching a query: a slow scan, on the worker pool.
        rpc(blocking) SEARCH = 4: search(Cbor<Query>) -> Cbor<Vec<User>>;
    }
}

/// Users scanned between two looks at the deadline; each chunk takes at least 1 ms.
const CHUNK: usize = 10;

/// The users in id order: user n at index n - 1.
#[derive(Default)]
struct Store(Mutex<Vec<User>>);

impl Store {
    fn lock(&self) -> MutexGuard<'_, Vec<User>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl directory::Directory for Store {
    fn create(&self, _ctx: &Context, Cbor(new): Cbor<NewUser>) -> Result<Cbor<UserId>, Status> {
        let mut users = self.lock();
        if users.iter().any(|user| user.name == new.name) {
            return Err(Status::already_exists(format!("{} is taken", new.name)));
        }
        let id = UserId(users.len() as u64 + 1);
        let NewUser { name, email } = new;
        users.push(User { id, name, email });
        Ok(Cbor(id))
    }

    fn get(&self, _ctx: &Context, Cbor(id): Cbor<UserId>) -> Result<Cbor<User>, Status> {
        let index = usize::try_from(id.0).ok().and_then(|n| n.checked_sub(1));
        match index.and_then(|i| self.lock().get(i).cloned()) {
            Some(user) => Ok(Cbor(user)),
            None => Err(Status::not_found(format!("no user {}", id.0))),
        }
    }

    fn count(&self, _ctx: &Context, (): ()) -> Result<u64, Status> {
        Ok(self.lock().len() as u64)
    }

    fn search(&self, ctx: &Context, Cbor(q): Cbor<Query>) -> Result<Cbor<Vec<User>>, Status> {
        let mut found = Vec::new();
        let mut start = 0;
        loop {
            if ctx.deadline.is_some_and(|d| d <= Instant::now()) {
                let why = format!("search gave up after {start} users");
                return Err(Status::deadline_exceeded(why));
            }
            let users = self.lock(); // held for one chunk, not for the whole scan
            let chunk = users.iter().skip(start).take(CHUNK);
            let matching = chunk.filter(|user| user.name.contains(&q.name_contains));
            found.extend(matching.cloned());
            start += CHUNK;
            if start >= users.len() {
                return Ok(Cbor(found));
            }
            drop(users);
            std::thread::sleep(Duration::from_millis(1)); // a slow disk, say
        }
    }
}

// --- main ---

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.add_service(directory::service(Store::default()));
    let mut args = std::env::args().skip(1);
    if let Some(flag) = args.next() {
        let addr: SocketAddr = match (flag.as_str(), args.next()) {
            ("--serve", Some(addr)) => addr.parse()?,
            _ => return Err("usage: user_directory [--serve IP:PORT]".into()),
        };
        let server = Server::builder().addr(addr).bind(router)?;
        // Whoever reads this line may connect at once: the socket is bound and queues them.
        println!("listening on {}", server.local_addr());
        std::io::stdout().flush()?;
        // Until a signal ends the process (SIGTERM's and SIGINT's default action).
        server.run()?;
        return Ok(());
    }
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?)
        .bind(router)?
        .spawn()?;
    let mut stub = directory::DirectoryClient::connect(server.local_addr())?;

    let new = |name: &str| {
        let email = format!("{}@example.org", name.to_lowercase());
        Cbor(NewUser {
            name: name.into(),
            email,
        })
    };
    let Cbor(ada) = stub.create(&new("Ada"))?;
    stub.create(&new("Grace"))?;
    stub.create(&new("Barbara"))?;
    let user = stub.get(&Cbor(ada))?;
    println!("get {}: {} <{}>", ada.0, user.name, user.email);
    let missing = code_of(stub.get(&Cbor(UserId(99))))?;
    check("get 99", missing, Code::NOT_FOUND)?;
    let again = code_of(stub.create(&new("Ada")))?;
    check("create Ada again", again, Code::ALREADY_EXISTS)?;

    // Enough users that a full scan takes about 200 ms: 2000 users, 1 ms per 10.
    for n in 0..1997 {
        stub.create(&new(&format!("user{n:04}")))?;
    }
    println!("count: {}", stub.count(&())?);

    let query = Cbor(Query {
        name_contains: "race".into(),
    });
    let started = Instant::now();
    let found = stub.search(&query)?;
    let names: Vec<&str> = found.iter().map(|user| user.name.as_str()).collect();
    println!("search \"race\": {names:?} in {:?}", started.elapsed());
    if names != ["Grace"] {
        return Err(format!("expected [\"Grace\"], got {names:?}").into());
    }

    // The same scan with 20 ms to spare: the handler notices its deadline has passed and
    // answers DEADLINE_EXCEEDED, unless the client stopped waiting first (Timeout).
    let options = CallOptions::default().with_deadline(Duration::from_millis(20));
    let late = stub
        .client()
        .call_with(&directory::SEARCH, &query, &options);
    match late {
        Err(ClientError::Status(s)) if s.code == Code::DEADLINE_EXCEEDED => {
            println!("search with a 20 ms deadline: the server answered {s}");
        }
        Err(ClientError::Timeout) => println!("search with a 20 ms deadline: the client timed out"),
        other => return Err(format!("expected DEADLINE_EXCEEDED, got {other:?}").into()),
    }
    server.shutdown()?;
    Ok(())
}

/// The status code of a call that had to fail with one.
fn code_of<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Result<Code, String> {
    match result {
        Err(ClientError::Status(status)) => Ok(status.code),
        other => Err(format!("expected an error status, got {other:?}")),
    }
}

/// Prints `what` and its code; an error unless it is `want`.
fn check(what: &str, got: Code, want: Code) -> Result<(), String> {
    println!("{what}: {got}");
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}"))
    }
}

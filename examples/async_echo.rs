// The async client: 100 tokio tasks call the echo service at once through one
// `AsyncClient`, all on one connection; each response is matched to its request by id.
// With no argument the example starts an echo server in-process on 127.0.0.1 (port 0);
// with an address (`cargo run --example async_echo --features tokio -- 127.0.0.1:7879`)
// it calls that server instead (an echo-server, or a kv-server, which serves echo too).
//
// Run it with `cargo run --example async_echo --features tokio`.

use std::time::Instant;

use courier_rpc::client::AsyncClient;
use courier_rpc::echo::ECHO;
use courier_rpc::{echo, Bytes, Router, Server};

const TASKS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The in-process server runs its own event loop threads; the client runs on tokio.
    let (addr, server) = match std::env::args().nth(1) {
        Some(addr) => (addr.parse()?, None),
        None => {
            let mut router = Router::new();
            echo::register(&mut router);
            let server = Server::builder()
                .addr("127.0.0.1:0".parse()?)
                .bind(router)?
                .spawn()?;
            (server.local_addr(), Some(server))
        }
    };
    let client = AsyncClient::connect(addr).await?;
    println!("connected to {}", client.peer_addr());

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TASKS);
    for i in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(format!("hello from task {i}"));
            let echoed = client.call(&ECHO, &body).await?;
            Ok::<bool, courier_rpc::ClientError>(echoed == body)
        }));
    }
    let (mut matched, mut mismatched, mut failed) = (0, 0, 0);
    for task in tasks {
        match task.await? {
            Ok(true) => matched += 1,
            Ok(false) => mismatched += 1,
            Err(e) => {
                eprintln!("call failed: {e}");
                failed += 1;
            }
        }
    }
    let elapsed = started.elapsed();

    println!("{TASKS} tasks, one connection: {matched} echoed their own body, {mismatched} another body, {failed} failed, in {elapsed:?}");
    let rtt = client.ping().await?;
    println!("ping: {rtt:?}");
    client.close().await;
    if let Some(server) = server {
        server.shutdown()?;
    }
    if matched == TASKS {
        Ok(())
    } else {
        Err(format!(
            "{} of {TASKS} calls did not echo their body",
            TASKS - matched
        )
        .into())
    }
}

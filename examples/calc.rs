// A service in a few lines: `service!` declares it once (its id, each method's id and types),
// the server implements the generated trait, the client calls the generated stub. The request
// is a serde struct sent as CBOR; an overflow is answered with the status OUT_OF_RANGE.
//
// Run it with `cargo run --example calc`.

use courier_rpc::{service, Cbor, ClientError, Code, Context, Router, Server, Status};
use serde::{Deserialize, Serialize};

/// Two numbers to add.
#[derive(Debug, Serialize, Deserialize)]
pub struct Operands {
    pub a: u32,
    pub b: u32,
}

service! {
    /// Service 100: arithmetic on u32s.
    pub mod calc(service = 100, name = "calc") {
        trait Calc;
        client CalcClient;
        /// The sum, or OUT_OF_RANGE when it does not fit in a u32.
        rpc ADD = 1: add(Cbor<Operands>) -> u32;
    }
}

struct Adder;

impl calc::Calc for Adder {
    fn add(&self, _ctx: &Context, Cbor(op): Cbor<Operands>) -> Result<u32, Status> {
        op.a.checked_add(op.b)
            .ok_or_else(|| Status::out_of_range(format!("{} + {} overflows", op.a, op.b)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut router = Router::new();
    router.add_service(calc::service(Adder));
    let server = Server::builder()
        .addr("127.0.0.1:0".parse()?) // port 0: any free port
        .bind(router)?
        .spawn()?;

    let mut client = calc::CalcClient::connect(server.local_addr())?;
    let sum = client.add(&Cbor(Operands { a: 2, b: 40 }))?;
    println!("2 + 40 = {sum}");
    if sum != 42 {
        return Err(format!("expected 42, got {sum}").into());
    }
    match client.add(&Cbor(Operands { a: u32::MAX, b: 1 })) {
        Err(ClientError::Status(s)) if s.code == Code::OUT_OF_RANGE => println!("refused: {s}"),
        other => return Err(format!("expected OUT_OF_RANGE, got {other:?}").into()),
    }
    server.shutdown()?;
    Ok(())
}

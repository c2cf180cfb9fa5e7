//! What is sent: the keys (a seeded xorshift64* per client) and each request, encoded with
//! the crate's own codec ([`courier_rpc::proto::Encoder`] and the kv and echo messages).

use bytes::{Bytes, BytesMut};
use courier_rpc::echo::ECHO;
use courier_rpc::kv::{Key, SetRequest, GET, SET};
use courier_rpc::proto::{Code, EncodeError, Encoder, Metadata};
use courier_rpc::service::{Message, Method};

use crate::args::Workload;

/// xorshift64* (Vigna, 2016): small, fast, and good enough to pick keys.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for client `index` of a run seeded with `seed`: the pair through
    /// splitmix64 (never 0).
    pub fn for_client(seed: u64, index: usize) -> Rng {
        let mut z = (seed ^ index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-64 * n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The key `key:NNNNNNNNNN` (ten digits, zero-padded; the lowest ten digits of `n`), built
/// without the formatting machinery: it runs once per request.
pub fn key(n: u64) -> Bytes {
    let mut key = *b"key:0000000000";
    let mut rest = n;
    for digit in key[4..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    Bytes::copy_from_slice(&key)
}

/// The kind of a request sent, which says how its response is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// echo ECHO: the body comes back.
    Echo,
    /// kv GET: the value, or NOT_FOUND (a miss).
    Get,
    /// kv SET: an empty OK.
    Set,
}

/// How a response ended, for the tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// OK, with a payload that decodes as the method's response.
    Hit,
    /// NOT_FOUND to a GET: a successful request.
    Miss,
    /// Any other status: a failed request, counted under the status's name.
    Failed(Code),
    /// OK, with a payload that does not decode as the method's response.
    Malformed,
}

impl Op {
    /// Reads the response to a request of this kind: its status, and for OK whether the
    /// payload decodes as the method's response message.
    pub fn answer(self, code: Code, payload: Bytes) -> Answer {
        if code == Code::NOT_FOUND && self == Op::Get {
            return Answer::Miss;
        }
        if !code.is_ok() {
            return Answer::Failed(code);
        }
        let decoded = match self {
            Op::Echo => decodes(&ECHO, payload),
            Op::Get => decodes(&GET, payload),
            Op::Set => decodes(&SET, payload),
        };
        if decoded {
            Answer::Hit
        } else {
            Answer::Malformed
        }
    }
}

/// Whether `payload` decodes as `method`'s response.
fn decodes<Req, Resp: Message>(_method: &Method<Req, Resp>, payload: Bytes) -> bool {
    Resp::decode(payload).is_ok()
}

/// The workload of a run: what each request is.
#[derive(Debug)]
pub struct Plan {
    /// The mix.
    pub workload: Workload,
    /// With `Workload::Mixed`: the fraction of GETs.
    pub read_ratio: f64,
    /// Keys are drawn from `0..keyspace`.
    pub keyspace: u64,
    /// Every SET's value and every echo body.
    pub value: Bytes,
}

/// One request of the workload, drawn and not yet encoded: its key says where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// echo ECHO of the plan's value.
    Echo,
    /// kv GET of the key.
    Get(Bytes),
    /// kv SET of the key to the plan's value.
    Set(Bytes),
}

impl Request {
    /// The key, for a kv request.
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Request::Echo => None,
            Request::Get(key) | Request::Set(key) => Some(key),
        }
    }
}

impl Plan {
    /// The next request of the workload; its keys (and for `mixed` its kind) come from `rng`.
    pub fn next(&self, rng: &mut Rng) -> Request {
        let read = match self.workload {
            Workload::Echo => return Request::Echo,
            Workload::Get => true,
            Workload::Set => false,
            Workload::Mixed => rng.unit() < self.read_ratio,
        };
        let key = key(rng.below(self.keyspace));
        if read {
            Request::Get(key)
        } else {
            Request::Set(key)
        }
    }

    /// Appends `request`, with id `request_id`, to `out` (one whole frame, or nothing on
    /// error).
    ///
    /// # Errors
    /// The encoder's, for a frame over its body limit (a value near the frame limit).
    pub fn encode(
        &self,
        request: &Request,
        encoder: &Encoder,
        out: &mut BytesMut,
        request_id: u64,
    ) -> Result<Op, EncodeError> {
        match request {
            Request::Echo => {
                encode(encoder, out, request_id, &ECHO, &self.value).map(|()| Op::Echo)
            }
            Request::Get(key) => {
                encode(encoder, out, request_id, &GET, &Key(key.clone())).map(|()| Op::Get)
            }
            Request::Set(key) => {
                let request = SetRequest {
                    key: key.clone(),
                    value: self.value.clone(),
                };
                encode(encoder, out, request_id, &SET, &request).map(|()| Op::Set)
            }
        }
    }
}

/// Appends the REQUEST of `method` with `request`, no deadline and no metadata, to `out`.
///
/// # Errors
/// The encoder's: a body over its limit.
pub fn encode<Req: Message, Resp>(
    encoder: &Encoder,
    out: &mut BytesMut,
    request_id: u64,
    method: &Method<Req, Resp>,
    request: &Req,
) -> Result<(), EncodeError> {
    let start = out.len();
    let mut refused = false;
    encoder.encode_request_with(
        out,
        request_id,
        method.service,
        method.method,
        0,
        &Metadata::new(),
        |body| refused = request.encode(body).is_err(),
    )?;
    if refused {
        // The kv and echo messages the bench builds always encode; a frame built around a
        // partial one is taken back all the same.
        out.truncate(start);
        return Err(EncodeError::FrameTooLarge {
            len: 0,
            max: encoder.max_body_len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ten_zero_padded_digits() {
        assert_eq!(&key(0)[..], b"key:0000000000");
        assert_eq!(&key(42)[..], b"key:0000000042");
        assert_eq!(&key(9_876_543_210)[..], b"key:9876543210");
    }

    #[test]
    fn a_get_miss_is_not_a_failure_and_a_bad_set_answer_is_malformed() {
        assert_eq!(Op::Get.answer(Code::NOT_FOUND, Bytes::new()), Answer::Miss);
        assert_eq!(
            Op::Set.answer(Code::NOT_FOUND, Bytes::new()),
            Answer::Failed(Code::NOT_FOUND)
        );
        assert_eq!(Op::Set.answer(Code::OK, Bytes::new()), Answer::Hit);
        assert_eq!(
            Op::Set.answer(Code::OK, Bytes::from_static(b"x")),
            Answer::Malformed
        );
    }
}

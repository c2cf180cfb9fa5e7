//! A connection's identity: who it is (from a client certificate or AUTH), AUTH and WHOAMI
//! themselves, and what it may send before it has an identity
//! (`proto-spec/PROTOCOL.md`, identity section; `proto-spec/SERVICES.md`, admin AUTH).
//!
//! The connection answers AUTH and WHOAMI itself, because it owns the identity; every other
//! request goes to the router, whose [`Authorizer`](crate::auth::Authorizer) decides, by the
//! identity, whether it runs (PERMISSION_DENIED when not).
//!
//! While a server requires authentication and a connection has none, the connection accepts
//! only AUTH, WHOAMI and PING: other requests are answered UNAUTHENTICATED without running,
//! and a frame body above [`PRE_AUTH_MAX_BODY`] (16 KiB) is a connection error
//! RESOURCE_EXHAUSTED, so that an anonymous peer cannot make the server buffer megabytes
//! (Redis limits unauthenticated input to 16 KiB the same way). After
//! [`MAX_AUTH_FAILURES`] failed AUTHs the connection is sent ERROR UNAUTHENTICATED and closed.
//! The token is never logged, nor kept: only the authenticator sees it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes};

use super::{CloseReason, Connection, MAX_AUTH_FAILURES, PRE_AUTH_MAX_BODY};
use crate::admin::{self, WhoAmI, MAX_TOKEN_LEN};
use crate::auth::{Authenticator, Identity};
use crate::proto::{Code, Metadata, Status};
use crate::service::Failure;
use crate::stats;

/// How a server's connections authenticate; one, shared by all of them.
#[derive(Clone, Debug, Default)]
pub struct Authentication {
    /// What AUTH checks tokens with; `None`: AUTH is answered FAILED_PRECONDITION.
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Whether a connection needs an identity for anything but AUTH, WHOAMI and PING.
    pub required: bool,
}

/// A connection's identity and AUTH state; boxed in the connection, and allocated only once
/// it has one or its server requires one, so that a connection with neither pays 8 bytes.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// Shared by the server's connections; `None`: no authentication.
    pub(super) authentication: Option<Arc<Authentication>>,
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) failures: u8,
}

impl Session {
    /// Whether the connection must authenticate before anything else.
    pub(super) fn needs_identity(&self) -> bool {
        self.identity.is_none() && self.authentication.as_ref().is_some_and(|a| a.required)
    }
}

impl Connection {
    /// Makes this connection authenticate as `authentication` says (a server sets it on each
    /// connection before it reads). While an identity is required and missing, frame bodies
    /// are limited to [`PRE_AUTH_MAX_BODY`].
    pub fn set_authentication(&mut self, authentication: Arc<Authentication>) {
        self.session.get_or_insert_with(Box::default).authentication = Some(authentication);
        self.update_body_limit();
    }

    /// Gives the connection `identity` (the subject of a verified client certificate, say),
    /// replacing any it had; `None` takes it away.
    pub fn set_identity(&mut self, identity: Option<Identity>) {
        match (identity, &mut self.session) {
            (None, None) => {}
            (identity, session) => {
                session.get_or_insert_with(Box::default).identity = identity.map(Arc::new);
            }
        }
        self.update_body_limit();
    }

    /// The connection's identity, if it has one.
    pub fn identity(&self) -> Option<&Identity> {
        self.session.as_ref()?.identity.as_deref()
    }

    /// Whether the connection must authenticate before anything else.
    fn needs_identity(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.needs_identity())
    }

    /// The identity to hand to a handler's [`Context`](crate::service::Context).
    pub(super) fn context_identity(&self) -> Option<Arc<Identity>> {
        self.session.as_ref()?.identity.clone()
    }

    fn update_body_limit(&mut self) {
        let max = if self.needs_identity() {
            self.config.max_body_len.min(PRE_AUTH_MAX_BODY)
        } else {
            self.config.max_body_len
        };
        self.decoder.set_max_body_len(max);
    }

    /// Answers the requests the connection handles itself (AUTH, WHOAMI), and refuses every
    /// other one while an identity is required and missing. Returns whether it answered.
    pub(super) fn answer_before_routing(
        &mut self,
        request_id: u64,
        service: u16,
        method: u16,
        payload: &Bytes,
        (slot, now): (usize, Instant),
    ) -> bool {
        let id = (request_id, slot);
        if service == admin::SERVICE && method == admin::AUTH.method {
            self.on_auth(id, payload, now);
            return true;
        }
        if service == admin::SERVICE && method == admin::WHOAMI.method {
            if !payload.is_empty() {
                let status = Status::invalid_argument("admin.WhoAmI takes an empty request");
                self.answer_failure(request_id, &Failure::status(status), slot);
                return true;
            }
            let answer = WhoAmI::of(self.identity());
            self.answer_ok(id, |out| answer.put(out));
            return true;
        }
        if self.needs_identity() {
            let status = Status::unauthenticated("authenticate first (admin.Auth); not processed");
            self.answer_failure(request_id, &Failure::status(status), slot);
            return true;
        }
        false
    }

    fn on_auth(&mut self, (request_id, slot): (u64, usize), token: &Bytes, now: Instant) {
        let authenticator = self
            .session
            .as_ref()
            .and_then(|s| s.authentication.as_ref())
            .and_then(|a| a.authenticator.clone());
        let Some(authenticator) = authenticator else {
            let status =
                Status::failed_precondition("authentication is not enabled on this server");
            self.answer_failure(request_id, &Failure::status(status), slot);
            return;
        };
        // An identity must have a name (WHOAMI and AUTH's answer show it).
        let proved = (1..=MAX_TOKEN_LEN)
            .contains(&token.len())
            .then(|| authenticator.authenticate(token))
            .flatten()
            .filter(|identity| !identity.name().is_empty());
        match proved {
            Some(identity) => {
                stats::inc(&self.stats.auth_ok);
                let name = identity.name().to_string();
                self.set_identity(Some(identity));
                self.answer_ok((request_id, slot), |out| out.put_slice(name.as_bytes()));
            }
            None => {
                stats::inc(&self.stats.auth_failed);
                // An authenticator was found above, so the session exists.
                let session = self.session.get_or_insert_with(Box::default);
                session.failures = session.failures.saturating_add(1);
                if session.failures >= MAX_AUTH_FAILURES {
                    let message = format!("{MAX_AUTH_FAILURES} failed AUTH attempts");
                    let error = (request_id, Code::UNAUTHENTICATED, message.as_str());
                    self.end(CloseReason::AuthFailures, Some(error), now);
                } else {
                    let status = Status::unauthenticated("invalid token");
                    self.answer_failure(request_id, &Failure::status(status), slot);
                }
            }
        }
    }

    /// Queues an OK response whose message `write` appends.
    fn answer_ok(
        &mut self,
        (request_id, slot): (u64, usize),
        write: impl FnOnce(&mut bytes::BytesMut),
    ) {
        let encoded = self.encoder.encode_response_with(
            &mut self.write_buf,
            request_id,
            Code::OK,
            &Metadata::new(),
            write,
        );
        match encoded {
            Ok(()) => {
                self.stats.answered(slot, Code::OK);
                stats::bump(&self.stats.frames_out, 1);
            }
            Err(err) => {
                let status = Status::resource_exhausted(format!("response not sent: {err}"));
                self.answer_failure(request_id, &Failure::status(status), slot);
            }
        }
    }
}

//! courier: a TCP request/response framework.
//!
//! Placeholder.
#![deny(missing_docs, missing_debug_implementations)]
#![doc(test(attr(deny(warnings))))]

pub mod proto;

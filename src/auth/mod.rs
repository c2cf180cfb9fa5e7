//! Identities, authentication (tokens, client certificates) and access control.

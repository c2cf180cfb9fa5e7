//! TLS configuration for servers and clients (rustls, TLS 1.3, ALPN `courier/1`).

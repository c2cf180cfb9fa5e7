//! The kv log's record format (sans-IO): encoding and scanning.

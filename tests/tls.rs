//! placeholder
#![cfg(feature = "tls")]

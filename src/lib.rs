//! wsgate: a WebSocket chat server that authenticates every connection during the opening
//! handshake, as a library you can embed and a `wsgate` binary.
//!
//! The contract (endpoints, credential carriers, token rules, status and close codes) is
//! SPEC.md; this crate is organised one module per concern:
//!
//! - [`head`]: the HTTP request head, parsed under fixed limits;
//! - [`credentials`]: finding the credential in that head (five carriers, in order);
//! - [`jwt`]: strict HS256 verification and signing;
//! - [`auth`]: the [`auth::Authenticator`] trait, sessions, origin policy, room access;
//! - [`rejection`]: every refusal and its HTTP status / close code, in one place.

pub mod auth;
pub mod credentials;
pub mod head;
pub mod jwt;
pub mod rejection;

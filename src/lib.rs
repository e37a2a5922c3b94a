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
//! - [`rejection`]: every refusal and its HTTP status / close code, in one place;
//! - [`handshake`]: reading the head, deciding, answering HTTP or upgrading;
//! - [`room`]: the room registry and fan-out;
//! - `connection`: one client's read/write loop;
//! - [`config`], [`metrics`], [`server`]: settings, counters, the accept loop and shutdown;
//! - `relay` (feature `redis`): rooms across nodes and sessions through Redis.
//!
//! Embedding takes a few lines; see [`Server`].

#![warn(missing_docs)]

pub mod auth;
pub mod config;
mod connection;
pub mod credentials;
pub mod handshake;
pub mod head;
pub mod jwt;
pub mod metrics;
pub mod rejection;
#[cfg(feature = "redis")]
pub mod relay;
pub mod room;
pub mod server;

pub use config::{Config, RejectMode};
pub use server::{ServeError, Server};

/// The README's Rust examples, compiled by `cargo test` so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

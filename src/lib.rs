//! wsgate: a WebSocket chat server that authenticates every connection during the opening
//! handshake, as a library you can embed and a `wsgate` binary.
//!
//! The wire contract (endpoints, credential carriers, token rules, status and close codes,
//! messages) is `PROTOCOL.md`. The crate reads as layers, lowest first; a module only uses
//! the ones above it in this list:
//!
//! - [`head`]: the HTTP request head, parsed under fixed limits;
//! - `bucket`, `throttle` (private): the one rate limiter, log lines at a bounded rate;
//! - [`jwt`]: strict HS256 verification and signing;
//! - [`credentials`]: finding the credential in a head (five carriers, in order);
//! - [`close`]: every close code the server sends, and why;
//! - [`rejection`]: every refusal and its HTTP status, close code and metrics label;
//! - [`origin`]: which pages may connect (cross-site WebSocket hijacking);
//! - [`auth`]: the [`auth::Authenticator`] trait, identities and session stores;
//! - [`http`]: reading a head from a socket, writing a plain response;
//! - [`handshake`]: upgrade checks, the `101`, tungstenite settings;
//! - [`config`]: every setting, with defaults;
//! - [`gate`]: **the decision**, from request head to admission, in one ordered function;
//! - `messages` (private), [`room`]: the JSON frames, rooms and fan-out;
//! - [`revocation`], [`metrics`], `shutdown` (private): ending sessions early, counters,
//!   stopping every task;
//! - [`cluster`]: this node among others; with the `redis` feature, rooms, revocations and
//!   notices across nodes, and sessions, through Redis;
//! - [`handle`]: what an embedder can do to a running server;
//! - `pending`, `identities` (private): the budget of sockets not yet admitted,
//!   per-identity limits;
//! - `connection`, `state`, `routes`, `admin`, `socket` (private): one client's loop, what
//!   the tasks share, the plain-HTTP endpoints, the admin API, one accepted socket's life;
//! - [`server`]: the accept loop that ties them together;
//! - `tls` (feature `tls`): `wss://` without a proxy, the certificate served and its reload.
//!
//! Embedding takes a few lines; see [`Server`]. To learn how the handshake is secured, start
//! at [`gate`].

#![warn(missing_docs)]

mod admin;
pub mod auth;
mod bucket;
pub mod close;
pub mod cluster;
pub mod config;
mod connection;
pub mod credentials;
pub mod gate;
pub mod handle;
pub mod handshake;
pub mod head;
pub mod http;
mod identities;
pub mod jwt;
mod messages;
pub mod metrics;
pub mod origin;
mod pending;
pub mod rejection;
pub mod revocation;
mod ring;
pub mod room;
mod routes;
pub mod server;
mod share;
mod shutdown;
mod socket;
mod state;
mod throttle;
#[cfg(feature = "tls")]
pub mod tls;

pub use config::{Config, RejectMode};
pub use handle::Handle;
pub use origin::OriginPolicy;
pub use server::{ServeError, Server};

/// The README's Rust examples, compiled by `cargo test` so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

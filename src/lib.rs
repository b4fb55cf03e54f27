//! clawrelay: a durable message relay between apps (the user-facing side) and
//! AI agent instances, on one SQLite file (or several relays on one
//! PostgreSQL database).
//!
//! A tour, from the outside in:
//! - [`app`] builds the application and serves it on a listener;
//! - [`http`] holds the thin handlers, [`ws`] the WebSocket transport (and
//!   the app stream that Server-Sent Events share), [`auth`] the credentials
//!   and the extractors that guard them;
//! - [`relay`] is the domain (inbound, send, poll, ack, admin), [`hub`] its
//!   in-memory wake-ups and liveness, [`cluster`] what relays sharing a
//!   PostgreSQL database share of it (wake-ups, liveness, leadership);
//! - [`store`] holds every SQL statement: SQLite behind one group-committing
//!   writer, PostgreSQL in each module's second arm;
//! - [`webhook`] pushes events to apps' HTTP endpoints (signing, target
//!   checks, the dispatcher);
//! - [`config`], [`error`], [`ids`], [`model`], [`tasks`], [`telemetry`] are
//!   what their names say.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod error;
pub mod http;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod relay;
pub mod search;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod turns;
pub mod webchat;
pub mod webhook;
pub mod ws;

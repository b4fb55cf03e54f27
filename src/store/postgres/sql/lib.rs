//! The PostgreSQL statements of clawrelay's store, checked at compile time.
//!
//! sqlx's query macros check every statement against a database (or, when
//! building offline, against the descriptions in the repository's `.sqlx/`):
//! the column and parameter types, nullability, and that the SQL parses.
//! They describe all of one crate's statements against one database, so
//! the relay's crate holds the SQLite statements and this crate the
//! PostgreSQL ones; `scripts/sqlx-prepare.sh` describes each against a
//! scratch database of its own schema and writes both into `.sqlx/`.
//!
//! One function per statement, in one module per store module of the relay
//! (`src/store/*.rs`, whose PostgreSQL arms call them, and
//! `src/store/postgres/`). A function binds its arguments and returns the
//! statement unrun: [`Statement`] when it returns no rows, [`Rows`] when it
//! does. The store runs it inside its transaction or on its pool. Ids are
//! plain `&str` here; the typed ids are the relay's.
//!
//! The structs here (`messages::Message`, `conversations::Conversation`,
//! `deliveries::Claimed` and `Listed`, `webhooks::Info` and `Attempt`,
//! `retention::Due`) are rows as both backends read them: the relay's
//! SQLite queries read into them too, since the relay's crate depends on
//! this one and not the other way.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::Postgres;

pub mod apps;
pub mod attachments;
pub mod clients;
pub mod console;
pub mod conversations;
pub mod cursor;
pub mod deliveries;
pub mod engine;
pub mod idempotency;
pub mod leader;
pub mod messages;
pub mod presence;
pub mod retention;
pub mod search;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod wakeups;
pub mod webhooks;

/// A statement that returns no rows, its arguments bound.
pub type Statement = sqlx::query::Query<'static, Postgres, PgArguments>;

/// A statement that returns rows, each read as a `T` by `F`
/// (`F: `[`Row<T>`]), its arguments bound.
pub type Rows<F> = sqlx::query::Map<'static, Postgres, F, PgArguments>;

/// How [`Rows`] reads one row as a `T`.
pub trait Row<T>: FnMut(PgRow) -> Result<T, sqlx::Error> + Send {}

impl<T, F: FnMut(PgRow) -> Result<T, sqlx::Error> + Send> Row<T> for F {}

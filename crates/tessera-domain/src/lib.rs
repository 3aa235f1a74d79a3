//! Tessera's governance model and its rules as plain types and pure functions.
//!
//! Nothing here performs I/O (the one exception is drawing random bytes for new secrets and ids)
//! or awaits: the store, the engine and the server build on these types and rules.

#[macro_use]
mod macros;

pub mod audit;
pub mod clock;
pub mod csv_file;
pub mod directory;
pub mod governance;
pub mod ids;
pub mod redact;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock};

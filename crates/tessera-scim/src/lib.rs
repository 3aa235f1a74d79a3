//! SCIM 2.0 (RFC 7643, RFC 7644) protocol pieces, without I/O.
//!
//! - [`error`]: the SCIM error response and its `scimType` values.
//! - [`filter`]: the filter grammar of RFC 7644 §3.4.2.2, parsed into an AST with limits on
//!   length, nesting and terms, tolerant of the forms Microsoft Entra ID really sends; PATCH paths.
//! - [`schema`]: the User, EnterpriseUser and Group schemas as attribute definitions.
//! - [`criteria`]: filters checked against a schema, typed, and evaluated in memory.
//! - [`resource`]: checking and normalising bodies, rendering resources, attribute selection.
//! - [`patch`]: the PATCH engine with the Entra ID and Okta dialects.

pub mod criteria;
pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;

pub use error::{ScimError, ScimType};
pub use filter::{AttrPath, CompValue, CompareOp, Filter, FilterLimits, parse_filter};

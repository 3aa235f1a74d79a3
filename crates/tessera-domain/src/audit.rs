//! The audit chain: what an audit entry holds, its canonical form, its hash, and the rules that
//! decide whether a sequence of stored entries is intact.
//!
//! Each entry's hash is SHA-256 over the canonical JSON of its content *including the previous
//! entry's hash and its own sequence number*, so editing, deleting or reordering any entry breaks
//! the chain from that point on. The store keeps a one-row head (last sequence number and hash)
//! so that removing the newest entries is detected too.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The hash the first entry links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// Tessera itself (bootstrap, scheduled work, the demo loader).
    System,
    /// An operator at the command line on the server's machine.
    Cli,
    /// A caller of the API authenticated with an admin token.
    AdminToken,
    /// An identity provider pushing through a data source (SCIM, CSV upload).
    DataSource,
    /// A machine caller of the REST API.
    ApiClient,
    /// A person.
    Identity,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::System => "system",
            ActorKind::Cli => "cli",
            ActorKind::AdminToken => "admin_token",
            ActorKind::DataSource => "data_source",
            ActorKind::ApiClient => "api_client",
            ActorKind::Identity => "identity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "system" => ActorKind::System,
            "cli" => ActorKind::Cli,
            "admin_token" => ActorKind::AdminToken,
            "data_source" => ActorKind::DataSource,
            "api_client" => ActorKind::ApiClient,
            "identity" => ActorKind::Identity,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// The credential, data source, client or identity id; `None` for system and CLI actors.
    pub id: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Actor {
            kind: ActorKind::System,
            id: None,
        }
    }

    pub fn cli() -> Self {
        Actor {
            kind: ActorKind::Cli,
            id: None,
        }
    }

    pub fn new(kind: ActorKind, id: impl Into<String>) -> Self {
        Actor {
            kind,
            id: Some(id.into()),
        }
    }
}

/// A change to record: what every state-changing path hands to the store's one `record` path.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub actor: Actor,
    /// `entity.verb`, e.g. `identity.create`, `admin_token.revoke`.
    pub action: String,
    pub entity_kind: String,
    pub entity_id: Option<String>,
    pub data_source_id: Option<String>,
    pub request_id: Option<String>,
    /// What changed. Never secrets: callers pass ids and non-secret attributes only.
    pub details: Value,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: &str, entity_kind: &str, entity_id: Option<&str>) -> Self {
        AuditEvent {
            actor,
            action: action.to_owned(),
            entity_kind: entity_kind.to_owned(),
            entity_id: entity_id.map(str::to_owned),
            data_source_id: None,
            request_id: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_data_source(mut self, data_source_id: &str) -> Self {
        self.data_source_id = Some(data_source_id.to_owned());
        self
    }

    pub fn with_request_id(mut self, request_id: Option<&str>) -> Self {
        self.request_id = request_id.map(str::to_owned);
        self
    }
}

/// An entry as stored: the event's fields flattened, plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub id: String,
    pub occurred_at: i64,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub entity_kind: String,
    pub entity_id: Option<String>,
    pub data_source_id: Option<String>,
    pub request_id: Option<String>,
    /// Canonical JSON text of the details, exactly as hashed.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    /// Builds the next entry of the chain from an event.
    pub fn seal(
        event: &AuditEvent,
        seq: i64,
        id: String,
        occurred_at: i64,
        prev_hash: String,
    ) -> Self {
        let mut entry = AuditEntry {
            seq,
            id,
            occurred_at,
            actor_kind: event.actor.kind.as_str().to_owned(),
            actor_id: event.actor.id.clone(),
            action: event.action.clone(),
            entity_kind: event.entity_kind.clone(),
            entity_id: event.entity_id.clone(),
            data_source_id: event.data_source_id.clone(),
            request_id: event.request_id.clone(),
            details: canonical_json(&event.details),
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.content_hash();
        entry
    }

    /// SHA-256 (hex) of the canonical content, which includes `seq` and `prev_hash`.
    pub fn content_hash(&self) -> String {
        let content = Value::Array(vec![
            Value::from(self.seq),
            Value::from(self.id.as_str()),
            Value::from(self.occurred_at),
            Value::from(self.actor_kind.as_str()),
            opt(&self.actor_id),
            Value::from(self.action.as_str()),
            Value::from(self.entity_kind.as_str()),
            opt(&self.entity_id),
            opt(&self.data_source_id),
            opt(&self.request_id),
            Value::from(self.details.as_str()),
            Value::from(self.prev_hash.as_str()),
        ]);
        hex::encode(Sha256::digest(canonical_json(&content).as_bytes()))
    }
}

fn opt(v: &Option<String>) -> Value {
    v.as_deref().map_or(Value::Null, Value::from)
}

/// JSON with object keys sorted at every level and no insignificant whitespace, so the same
/// value always hashes the same whatever map order serde_json was built with.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Why a chain is not intact, naming the first entry where it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {expected} is missing (next entry found is {found})")]
    Missing { expected: i64, found: i64 },
    #[error("entry {seq} does not link to the entry before it (previous hash differs)")]
    Unlinked { seq: i64 },
    #[error("entry {seq} was altered (its content no longer matches its hash)")]
    Altered { seq: i64 },
    #[error(
        "the chain ends at entry {last_seq} but the head records entry {head_seq}: newer entries were removed or the head was altered"
    )]
    HeadMismatch { last_seq: i64, head_seq: i64 },
    #[error(
        "{count} entries (the first numbered {first}) lie outside the chain recorded by the head: they were not appended by Tessera"
    )]
    Foreign { count: i64, first: i64 },
}

impl ChainBreak {
    /// Sequence number of the first broken entry.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Missing { expected, .. } => *expected,
            ChainBreak::Unlinked { seq } | ChainBreak::Altered { seq } => *seq,
            ChainBreak::HeadMismatch { last_seq, .. } => last_seq + 1,
            ChainBreak::Foreign { first, .. } => *first,
        }
    }
}

/// Checks entries fed in ascending `seq` order; holds only the previous hash, so a chain of any
/// length is verified in constant memory.
#[derive(Debug)]
pub struct ChainVerifier {
    next_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            next_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// What an intact chain looks like at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub entries: i64,
    pub head_hash: String,
}

impl ChainVerifier {
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        if entry.seq != self.next_seq {
            return Err(ChainBreak::Missing {
                expected: self.next_seq,
                found: entry.seq,
            });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: entry.seq });
        }
        if entry.content_hash() != entry.hash {
            return Err(ChainBreak::Altered { seq: entry.seq });
        }
        self.next_seq += 1;
        self.prev_hash = entry.hash.clone();
        Ok(())
    }

    /// Compares the end of the chain with the recorded head.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<ChainSummary, ChainBreak> {
        let last_seq = self.next_seq - 1;
        if last_seq != head_seq || self.prev_hash != head_hash {
            return Err(ChainBreak::HeadMismatch { last_seq, head_seq });
        }
        Ok(ChainSummary {
            entries: last_seq,
            head_hash: self.prev_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent::new(Actor::cli(), "thing.create", "thing", Some("t1"))
                    .with_details(json!({"b": seq, "a": [1, {"z": 1, "y": 2}]}));
                let entry =
                    AuditEntry::seal(&event, seq, format!("id{seq}"), 1000 + seq, prev.clone());
                prev = entry.hash.clone();
                entry
            })
            .collect()
    }

    fn verify(
        entries: &[AuditEntry],
        head_seq: i64,
        head_hash: &str,
    ) -> Result<ChainSummary, ChainBreak> {
        let mut v = ChainVerifier::default();
        for e in entries {
            v.check(e)?;
        }
        v.finish(head_seq, head_hash)
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"d": [3, {"f": 1, "e": 2}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"d":[3,{"e":2,"f":1}]},"b":1}"#
        );
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let s = verify(&c, 5, &c[4].hash).unwrap();
        assert_eq!(s.entries, 5);
        assert!(verify(&[], 0, GENESIS_HASH).is_ok());
    }

    #[test]
    fn edited_entry_is_named() {
        let mut c = chain(5);
        c[2].details = r#"{"b":99}"#.into();
        assert_eq!(
            verify(&c, 5, &c[4].hash.clone()),
            Err(ChainBreak::Altered { seq: 3 })
        );
    }

    #[test]
    fn deleted_entry_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let head = c[3].hash.clone();
        assert_eq!(
            verify(&c, 5, &head),
            Err(ChainBreak::Missing {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn removed_tail_is_detected_by_head() {
        let c = chain(5);
        let err = verify(&c[..4], 5, &c[4].hash).unwrap_err();
        assert_eq!(
            err,
            ChainBreak::HeadMismatch {
                last_seq: 4,
                head_seq: 5
            }
        );
        assert_eq!(err.seq(), 5);
    }

    #[test]
    fn reordered_entries_are_detected() {
        let mut c = chain(5);
        // Swap the contents of entries 2 and 3 but keep the sequence numbers in order.
        let (a, b) = (c[1].clone(), c[2].clone());
        c[1] = AuditEntry { seq: 2, ..b };
        c[2] = AuditEntry { seq: 3, ..a };
        let head = c[4].hash.clone();
        assert_eq!(verify(&c, 5, &head), Err(ChainBreak::Unlinked { seq: 2 }));
    }
}

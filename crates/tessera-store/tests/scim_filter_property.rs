//! Property test: a SCIM filter run as SQL (`tessera_store::scim::list`) returns exactly the
//! users that the in-memory evaluator (`Criteria::matches` over the rendered resource) accepts,
//! on SQLite and, when `TEST_PG_URL` is set, on PostgreSQL.
//!
//! Users and filters are both random. Strings come from small pools with mixed case, Latin-1
//! letters and SQL wildcard characters, so that comparisons hit, miss, and exercise folding.
//! Users are generated once per round (not shrunk); filters are shrunk by proptest, and a
//! failure names the users on which the two paths disagree.

use std::cell::Cell;
use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, MatchingKey};
use tessera_scim::criteria::compile;
use tessera_scim::filter::{FilterLimits, parse_filter};
use tessera_scim::resource::normalize_resource;
use tessera_scim::schema::{ResourceKind, ResourceType};
use tessera_store::scim::{self, ListQuery, ScimRecord};
use tessera_store::{ChangeContext, Db, directory};
use tessera_testkit::TestDb;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const BASE: &str = "https://tessera.test/scim/v2";
const ROUNDS: usize = 3;
const USERS_PER_ROUND: usize = 24;
const FILTERS_PER_ROUND: u32 = 120;

/// Words users are made of and filters compare with: case variants, Latin-1 letters whose
/// folding PostgreSQL's `lower()` and Rust agree on, prefixes and suffixes of each other, and
/// characters that would be wildcards in a careless `LIKE`.
const WORDS: &[&str] = &[
    "alice",
    "Alice",
    "ALICE",
    "ali",
    "ice",
    "bob",
    "Bób",
    "bó",
    "éclair",
    "Éclair",
    "ÉCLAIR",
    "zoë",
    "ZOË",
    "Zoe",
    "straße",
    "a_b",
    "a%b",
    "50%",
    "x",
    "X",
    "Ünïcode",
    "ünï",
];
const EMAIL_TYPES: &[&str] = &["work", "Work", "home", "other"];
const PHONE_TYPES: &[&str] = &["work", "mobile", "Mobile"];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop::option::weighted(0.7, s)
}

/// One user's POST body (without `userName`, which is made unique when inserting).
fn user_body() -> impl Strategy<Value = Map<String, Value>> {
    let email = (
        word(),
        maybe(prop::sample::select(EMAIL_TYPES)),
        maybe(any::<bool>()),
        maybe(word()),
    )
        .prop_map(|(value, ty, primary, display)| {
            let mut e = Map::new();
            e.insert("value".into(), json!(format!("{value}@Example.org")));
            if let Some(ty) = ty {
                e.insert("type".into(), json!(ty));
            }
            if let Some(primary) = primary {
                e.insert("primary".into(), json!(primary));
            }
            if let Some(display) = display {
                e.insert("display".into(), json!(display));
            }
            Value::Object(e)
        });
    let phone = (word(), maybe(prop::sample::select(PHONE_TYPES)))
        .prop_map(|(value, ty)| json!({"value": value, "type": ty}));
    let address = (word(), maybe(prop::sample::select(EMAIL_TYPES)), any::<bool>())
        .prop_map(|(locality, ty, primary)| json!({"locality": locality, "type": ty, "primary": primary && ty.is_some()}));
    (
        (
            word(),
            maybe(word()),
            maybe(word()),
            maybe(word()),
            maybe(word()),
            maybe(word()),
            maybe(any::<bool>()),
        ),
        (
            prop::collection::vec(email, 0..3),
            prop::collection::vec(phone, 0..2),
            prop::collection::vec(address, 0..2),
            maybe(word()),
            maybe(word()),
            maybe(word()),
        ),
    )
        .prop_map(
            |(
                (user_name, external_id, display, nick, given, family, active),
                (emails, phones, addresses, department, employee, manager),
            )| {
                let mut body = Map::new();
                body.insert("userName".into(), json!(user_name));
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        body.insert(k.into(), v);
                    }
                };
                put("externalId", external_id.map(Value::from));
                put("displayName", display.map(Value::from));
                put("nickName", nick.map(Value::from));
                put("active", active.map(Value::from));
                if given.is_some() || family.is_some() {
                    put(
                        "name",
                        Some(json!({"givenName": given, "familyName": family})),
                    );
                }
                // At most one primary e-mail and address, as the schema requires.
                put("emails", Some(Value::Array(one_primary(emails))));
                put("phoneNumbers", Some(Value::Array(phones)));
                put("addresses", Some(Value::Array(one_primary(addresses))));
                let mut ext = Map::new();
                if let Some(d) = department {
                    ext.insert("department".into(), json!(d));
                }
                if let Some(e) = employee {
                    ext.insert("employeeNumber".into(), json!(e));
                }
                if let Some(m) = manager {
                    ext.insert("manager".into(), json!({"value": m}));
                }
                if !ext.is_empty() {
                    body.insert(ENTERPRISE.into(), Value::Object(ext));
                }
                body
            },
        )
}

fn one_primary(mut items: Vec<Value>) -> Vec<Value> {
    let mut seen = false;
    for item in &mut items {
        if item.get("primary") == Some(&Value::Bool(true)) {
            if seen {
                item["primary"] = json!(false);
            }
            seen = true;
        }
    }
    items
}

/// Values a filter may compare with: the words, what the users hold (ids, times, groups).
#[derive(Debug, Clone)]
struct Pools {
    ids: Vec<String>,
    group_ids: Vec<String>,
    times: Vec<String>,
}

/// Case-insensitively named attributes are sent in random case, as clients do.
fn attr_name(name: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(name.to_owned()),
        1 => Just(name.to_uppercase()),
        1 => Just(name.to_lowercase()),
    ]
}

fn text_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"][..])
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A comparison value for text: a word, a part of one, or (rarely) empty.
fn text_value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => word(),
        2 => word().prop_flat_map(|w| {
            let chars: Vec<char> = w.chars().collect();
            let n = chars.len();
            (0..n, 0..=n).prop_map(move |(a, b)| {
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                chars[a..b].iter().collect::<String>()
            })
        }),
        1 => word().prop_map(|w| format!("{w}@example.org")),
    ]
}

const TEXT_ATTRS: &[&str] = &[
    "userName",
    "displayName",
    "nickName",
    "name.givenName",
    "name.familyName",
    "externalId",
    "emails",
    "emails.value",
    "emails.type",
    "emails.display",
    "phoneNumbers.value",
    "phoneNumbers.type",
    "addresses.locality",
    "addresses.type",
];
const EXT_TEXT_ATTRS: &[&str] = &["department", "employeeNumber", "manager.value"];
const PRESENT_ATTRS: &[&str] = &[
    "userName",
    "displayName",
    "nickName",
    "name",
    "name.givenName",
    "externalId",
    "active",
    "emails",
    "emails.type",
    "emails.primary",
    "phoneNumbers",
    "addresses.primary",
    "groups",
    "meta.created",
];

fn leaf(pools: Pools) -> BoxedStrategy<String> {
    let ids = pools.ids.clone();
    let groups = pools.group_ids.clone();
    let times = pools.times.clone();
    let text = (
        prop::sample::select(TEXT_ATTRS).prop_flat_map(attr_name),
        text_op(),
        text_value(),
    )
        .prop_map(|(a, op, v)| format!("{a} {op} {}", quoted(&v)));
    let ext_text = (
        prop::sample::select(EXT_TEXT_ATTRS),
        text_op(),
        text_value(),
    )
        .prop_map(|(a, op, v)| format!("{ENTERPRISE}:{a} {op} {}", quoted(&v)));
    let present = prop::sample::select(PRESENT_ATTRS)
        .prop_flat_map(attr_name)
        .prop_map(|a| format!("{a} pr"));
    let null = (
        prop::sample::select(&["displayName", "name.familyName", "emails.type"][..]),
        prop::sample::select(&["eq", "ne"][..]),
    )
        .prop_map(|(a, op)| format!("{a} {op} null"));
    let boolean = (
        prop::sample::select(&["active", "emails.primary", "addresses.primary"][..]),
        prop::sample::select(&["eq", "ne"][..]),
        any::<bool>(),
    )
        .prop_map(|(a, op, b)| format!("{a} {op} {b}"));
    let id = (
        prop::sample::select(ids),
        prop::sample::select(&["eq", "ne", "sw"][..]),
    )
        .prop_map(|(id, op)| format!("id {op} {}", quoted(&id)));
    let group =
        prop::sample::select(groups).prop_map(|g| format!("groups.value eq {}", quoted(&g)));
    let time = (
        prop::sample::select(&["meta.created", "meta.lastModified"][..]),
        prop::sample::select(&["eq", "ne", "gt", "ge", "lt", "le"][..]),
        prop::sample::select(times),
    )
        .prop_map(|(a, op, t)| format!("{a} {op} {}", quoted(&t)));
    prop_oneof![
        8 => text,
        3 => ext_text,
        3 => present,
        1 => null,
        2 => boolean,
        1 => id,
        1 => group,
        2 => time,
    ]
    .boxed()
}

/// A filter inside `emails[...]`, `phoneNumbers[...]` or `addresses[...]`.
fn value_path() -> BoxedStrategy<String> {
    let emails = sub_filter(&["value", "type", "display"], &["primary"], EMAIL_TYPES)
        .prop_map(|f| format!("emails[{f}]"));
    let phones =
        sub_filter(&["value", "type"], &[], PHONE_TYPES).prop_map(|f| format!("phoneNumbers[{f}]"));
    let addresses = sub_filter(&["locality", "type"], &["primary"], EMAIL_TYPES)
        .prop_map(|f| format!("addresses[{f}]"));
    prop_oneof![3 => emails, 1 => phones, 1 => addresses].boxed()
}

fn sub_filter(
    texts: &'static [&'static str],
    bools: &'static [&'static str],
    types: &'static [&'static str],
) -> BoxedStrategy<String> {
    let values = prop_oneof![
        2 => text_value(),
        1 => prop::sample::select(types).prop_map(str::to_owned),
    ];
    let text = (prop::sample::select(texts), text_op(), values)
        .prop_map(|(a, op, v)| format!("{a} {op} {}", quoted(&v)));
    let present = prop::sample::select(texts).prop_map(|a| format!("{a} pr"));
    let leaf = if bools.is_empty() {
        prop_oneof![4 => text, 1 => present].boxed()
    } else {
        let boolean =
            (prop::sample::select(bools), any::<bool>()).prop_map(|(a, b)| format!("{a} eq {b}"));
        prop_oneof![4 => text, 1 => present, 2 => boolean].boxed()
    };
    leaf.prop_recursive(2, 4, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
    .boxed()
}

fn filter(pools: Pools) -> BoxedStrategy<String> {
    let leaf = prop_oneof![5 => leaf(pools), 1 => value_path()];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.clone().prop_map(|a| format!("not ({a})")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(a, b, c)| format!("{a} or {b} and {c}")),
        ]
    })
    .boxed()
}

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli()).with_request_id("property")
}

/// Inserts the round's users and three groups with random members; returns the pools.
async fn load_round(
    db: &Db,
    data_source: &str,
    bodies: &[Map<String, Value>],
    memberships: &[[bool; 3]],
) -> Pools {
    let user_type = ResourceType::of(ResourceKind::User);
    let group_type = ResourceType::of(ResourceKind::Group);
    let mut ids = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut body = body.clone();
        // userName is unique case-insensitively: a numeric suffix keeps the words in play.
        let user_name = format!("{}{i}", body["userName"].as_str().expect("a word"));
        body.insert("userName".into(), json!(user_name));
        let doc = normalize_resource(user_type, &Value::Object(body)).expect("a valid user");
        let record = scim::create(db, &ctx(), ResourceKind::User, data_source, doc)
            .await
            .expect("create user");
        ids.push(record.id);
    }
    let mut group_ids = Vec::new();
    for g in 0..3 {
        let members: Vec<Value> = ids
            .iter()
            .zip(memberships)
            .filter(|(_, m)| m[g])
            .map(|(id, _)| json!({"value": id}))
            .collect();
        let body = json!({"displayName": format!("Group {g}"), "members": members});
        let doc = normalize_resource(group_type, &body).expect("a valid group");
        let record = scim::create(db, &ctx(), ResourceKind::Group, data_source, doc)
            .await
            .expect("create group");
        group_ids.push(record.id);
    }
    let all = all_users(db, data_source).await;
    let mut times: BTreeSet<String> = BTreeSet::new();
    for user in &all {
        let meta = &user.render(BASE)["meta"];
        for key in ["created", "lastModified"] {
            times.insert(meta[key].as_str().expect("a time").to_owned());
        }
    }
    // Around the stored instants too, and in another offset, to catch string comparison.
    let first = times.first().cloned().expect("users exist");
    times.insert("2000-01-01T00:00:00Z".into());
    times.insert("2999-12-31T23:59:59+05:00".into());
    times.insert(first.replace('Z', "+00:00"));
    Pools {
        ids,
        group_ids,
        times: times.into_iter().collect(),
    }
}

async fn all_users(db: &Db, data_source: &str) -> Vec<ScimRecord> {
    let q = ListQuery {
        criteria: None,
        sort: None,
        start_index: 1,
        count: 10_000,
        with_refs: true,
    };
    scim::list(db, ResourceKind::User, data_source, &q)
        .await
        .expect("list users")
        .1
}

/// Runs one filter both ways; the difference, if any, as a readable failure. Returns how many
/// users matched, of how many.
async fn check(db: &Db, data_source: &str, filter: &str) -> Result<(usize, usize), TestCaseError> {
    let user_type = ResourceType::of(ResourceKind::User);
    let parsed = parse_filter(filter, FilterLimits::default())
        .map_err(|e| TestCaseError::fail(format!("generated filter does not parse: {e:?}")))?;
    let criteria = compile(user_type, &parsed)
        .map_err(|e| TestCaseError::fail(format!("generated filter does not compile: {e:?}")))?;
    let all = all_users(db, data_source).await;
    let expected: BTreeSet<String> = all
        .iter()
        .filter(|u| criteria.matches(&u.render(BASE)))
        .map(|u| u.id.clone())
        .collect();
    let q = ListQuery {
        criteria: Some(&criteria),
        sort: None,
        start_index: 1,
        count: 10_000,
        with_refs: false,
    };
    let (total, records) = scim::list(db, ResourceKind::User, data_source, &q)
        .await
        .map_err(|e| TestCaseError::fail(format!("SQL failed for {filter}: {e:?}")))?;
    let actual: BTreeSet<String> = records.into_iter().map(|r| r.id).collect();
    if actual != expected || usize::try_from(total).ok() != Some(actual.len()) {
        let differing: Vec<Value> = all
            .iter()
            .filter(|u| expected.contains(&u.id) != actual.contains(&u.id))
            .map(|u| {
                json!({
                    "in_memory": expected.contains(&u.id),
                    "sql": actual.contains(&u.id),
                    "user": Value::Object(u.render(BASE)),
                })
            })
            .collect();
        return Err(TestCaseError::fail(format!(
            "{:?}: filter {filter}\ncriteria {criteria:?}\ntotal {total}, SQL {} ids, in memory {} ids; users that differ:\n{}",
            db.backend(),
            actual.len(),
            expected.len(),
            serde_json::to_string_pretty(&differing).unwrap_or_default()
        )));
    }
    Ok((actual.len(), all.len()))
}

#[test]
fn sql_filters_agree_with_the_in_memory_evaluator() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dbs = rt.block_on(TestDb::all());
    let mut seeds = TestRunner::default();
    let users = prop::collection::vec(user_body(), USERS_PER_ROUND);
    let memberships = prop::collection::vec(any::<[bool; 3]>(), USERS_PER_ROUND);
    for round in 0..ROUNDS {
        let bodies = users.new_tree(&mut seeds).expect("users").current();
        let groups = memberships.new_tree(&mut seeds).expect("groups").current();
        for t in &dbs {
            let db = &t.db;
            let (data_source, pools) = rt.block_on(async {
                let mut tx = db.begin().await.expect("begin");
                let ds = directory::create_data_source(
                    &mut tx,
                    &ctx(),
                    &format!("Property {round}"),
                    DataSourceKind::Scim,
                    MatchingKey::UserName,
                )
                .await
                .expect("data source");
                tx.commit().await.expect("commit");
                let pools = load_round(db, &ds.id, &bodies, &groups).await;
                (ds.id, pools)
            });
            let mut runner = TestRunner::new(Config {
                cases: FILTERS_PER_ROUND,
                failure_persistence: None,
                ..Config::default()
            });
            // Filters that select some users but not all: the ones that can tell SQL apart.
            let selective = Cell::new(0u32);
            let result = runner.run(&filter(pools), |f| {
                let (matched, of) = rt.block_on(check(db, &data_source, &f))?;
                if matched > 0 && matched < of {
                    selective.set(selective.get() + 1);
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("round {round} on {:?}: {e}", db.backend());
            }
            assert!(
                selective.get() >= FILTERS_PER_ROUND / 4,
                "only {} of {FILTERS_PER_ROUND} filters were selective: the generators need work",
                selective.get()
            );
            eprintln!(
                "round {round} on {:?}: {} of {FILTERS_PER_ROUND} filters selective",
                db.backend(),
                selective.get()
            );
        }
    }
}

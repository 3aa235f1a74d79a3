//! CSV applications (Apporetum's *CSV App User Upload*): the member list of an application
//! without an API, checked row by row and compared with what Tessera holds for it.
//!
//! The file says who holds which role *in the application*. Tessera keeps that as accounts and
//! `external` grants; rows that no live grant made by Tessera explains are reported as drift
//! (`unauthorised`), and live grants made by Tessera that the file lacks as `missing`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::GrantSource;
use crate::csv_file::CsvFile;
pub use crate::csv_file::{MAX_ROW_ERRORS, MAX_ROWS, RowError, RowErrors};
use crate::directory::{InvalidInput, MatchingKey, fold};

/// How an application's member file is laid out, and how its user keys find identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct MemberFormat {
    /// The column holding the user key (default `user`).
    pub user_column: String,
    /// The column holding the role: its name, or `resource/role` where names repeat (default
    /// `role`).
    pub role_column: String,
    /// The optional column holding when access ends: a date (`2026-12-31`, access ends at the
    /// end of that day, UTC) or an RFC 3339 date-time (default `end_date`).
    pub end_date_column: String,
    /// Which identity attribute the user key is compared with (default `user_name`).
    pub match_by: MatchingKey,
}

impl Default for MemberFormat {
    fn default() -> Self {
        MemberFormat {
            user_column: "user".into(),
            role_column: "role".into(),
            end_date_column: "end_date".into(),
            match_by: MatchingKey::UserName,
        }
    }
}

impl MemberFormat {
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let names = [&self.user_column, &self.role_column, &self.end_date_column];
        for name in names {
            if name.trim().is_empty()
                || name.chars().count() > 64
                || name.chars().any(char::is_control)
            {
                return Err(InvalidInput::new(
                    "member_format",
                    "column names must be 1-64 printable characters",
                ));
            }
        }
        let folded: HashSet<String> = names.iter().map(|n| fold(n.trim())).collect();
        if folded.len() != names.len() {
            return Err(InvalidInput::new(
                "member_format",
                "the user, role and end date columns must differ",
            ));
        }
        Ok(())
    }
}

/// A member as given, before it is checked.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawMember {
    pub user_key: String,
    pub role: String,
    pub end_date: Option<String>,
}

/// A checked member row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub line: u64,
    pub user_key: String,
    pub role_id: String,
    pub ends_at: Option<i64>,
}

/// The application's roles by the names a file may use.
#[derive(Debug, Default)]
pub struct RoleIndex {
    by_name: HashMap<String, Vec<String>>,
    by_path: HashMap<String, Vec<String>>,
}

impl RoleIndex {
    /// From (resource name, role name, role id) of every role in the application.
    pub fn new<'a>(roles: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut index = RoleIndex::default();
        for (resource, role, id) in roles {
            index
                .by_name
                .entry(fold(role.trim()))
                .or_default()
                .push(id.to_owned());
            index
                .by_path
                .entry(format!("{}/{}", fold(resource.trim()), fold(role.trim())))
                .or_default()
                .push(id.to_owned());
        }
        index
    }

    fn resolve(&self, text: &str) -> Result<&str, String> {
        let key = fold(text.trim());
        match self.by_path.get(&key).map(Vec::as_slice) {
            Some([id]) => return Ok(id),
            Some(_) => {
                return Err(format!(
                    "{text:?} names roles of several resources with the same name; \
                     rename one of those resources"
                ));
            }
            None => {}
        }
        match self.by_name.get(&key).map(Vec::as_slice) {
            Some([id]) => Ok(id),
            Some(_) => Err(format!(
                "{text:?} names roles on several resources; write resource/role"
            )),
            None => Err(format!("the application has no role {text:?}")),
        }
    }
}

/// Parses an end date: a calendar date (access ends when that day ends, UTC) or an RFC 3339
/// date-time. Returns epoch milliseconds.
pub fn parse_end_date(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match time::Date::parse(text, &format) {
        Ok(date) => {
            let end = date.midnight().assume_utc().unix_timestamp() + 24 * 3600;
            Ok(end * 1000)
        }
        Err(_) => Err(format!(
            "{text:?} is neither a date (2026-12-31) nor an RFC 3339 date-time"
        )),
    }
}

/// Reads a CSV member file (UTF-8, optional BOM, CRLF or LF, RFC 4180 quoting) into raw rows
/// numbered by line. Header problems are reported at line 1.
pub fn read_csv(body: &[u8], format: &MemberFormat) -> Result<Vec<(u64, RawMember)>, RowErrors> {
    let mut errors = RowErrors::default();
    let Some(file) = CsvFile::open(body, &mut errors) else {
        return Err(errors);
    };
    let position = |name: &str| file.headers.iter().position(|h| *h == fold(name.trim()));
    let user = position(&format.user_column);
    let role = position(&format.role_column);
    let end = position(&format.end_date_column);
    for (name, found) in [(&format.user_column, user), (&format.role_column, role)] {
        if found.is_none() {
            errors.push(1, Some(name), format!("the header has no {name:?} column"));
        }
    }
    let (Some(user), Some(role)) = (user, role) else {
        return Err(errors);
    };
    let mut rows = Vec::new();
    file.for_each(&mut errors, |line, record| {
        let cell = |i: usize| record.get(i).unwrap_or("").to_owned();
        rows.push((
            line,
            RawMember {
                user_key: cell(user),
                role: cell(role),
                end_date: end.map(cell).filter(|s| !s.trim().is_empty()),
            },
        ));
    });
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// Checks raw rows: a user key, a role of the application, an end date that has not passed,
/// and no (user, role) twice. Either every row is good, or every error is returned.
pub fn check_rows(
    raw: Vec<(u64, RawMember)>,
    format: &MemberFormat,
    roles: &RoleIndex,
    now: i64,
) -> Result<Vec<MemberRow>, RowErrors> {
    let mut errors = RowErrors::default();
    let mut rows = Vec::with_capacity(raw.len());
    let mut seen: HashMap<(String, String), u64> = HashMap::with_capacity(raw.len());
    for (line, m) in raw {
        let user_key = m.user_key.trim().to_owned();
        let mut ok = true;
        if user_key.is_empty()
            || user_key.chars().count() > 256
            || user_key.chars().any(char::is_control)
        {
            errors.push(
                line,
                Some(&format.user_column),
                "a user key of 1-256 printable characters is required",
            );
            ok = false;
        }
        let role_id = match roles.resolve(&m.role) {
            Ok(id) => Some(id.to_owned()),
            Err(reason) => {
                errors.push(line, Some(&format.role_column), reason);
                None
            }
        };
        let ends_at = match m.end_date.as_deref().map(parse_end_date) {
            None => None,
            Some(Ok(t)) if t <= now => {
                errors.push(
                    line,
                    Some(&format.end_date_column),
                    "the end date has passed",
                );
                ok = false;
                None
            }
            Some(Ok(t)) => Some(t),
            Some(Err(reason)) => {
                errors.push(line, Some(&format.end_date_column), reason);
                ok = false;
                None
            }
        };
        let (Some(role_id), true) = (role_id, ok) else {
            continue;
        };
        if let Some(first) = seen.insert((fold(&user_key), role_id.clone()), line) {
            errors.push(
                line,
                Some(&format.user_column),
                format!("the same user and role are already on line {first}"),
            );
            continue;
        }
        rows.push(MemberRow {
            line,
            user_key,
            role_id,
            ends_at,
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// An account the application holds in Tessera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAccount {
    pub id: String,
    pub user_key: String,
    pub identity_id: Option<String>,
}

/// A live grant in the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGrant {
    pub id: String,
    pub role_id: String,
    pub identity_id: Option<String>,
    pub account_id: Option<String>,
    pub source: GrantSource,
    /// Scheduled grants have not started: they do not explain access the file shows.
    pub active: bool,
    pub ends_at: Option<i64>,
    pub version: i64,
}

/// What an upload changes, and the drift it shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MemberPlan {
    /// User keys with no account yet, and the identity each matched (if any).
    pub accounts_added: Vec<(String, Option<String>)>,
    /// Unmatched accounts that now match an identity: (account, identity).
    pub accounts_matched: Vec<(HeldAccount, String)>,
    /// Accounts whose user key is not in the file.
    pub accounts_removed: Vec<HeldAccount>,
    /// Access the file shows that Tessera did not grant, to record as `external` grants: the
    /// rows (indexes into the checked rows).
    pub grants_added: Vec<usize>,
    /// `external` grants the file no longer shows.
    pub grants_removed: Vec<HeldGrant>,
    /// `external` grants whose end changed: (grant, new end).
    pub grants_changed: Vec<(HeldGrant, Option<i64>)>,
    /// Rows no live grant made by Tessera explains (indexes into the checked rows).
    pub unauthorised: Vec<usize>,
    /// Live grants made by Tessera that the file lacks: (grant, the holder's user key there,
    /// if it has an account).
    pub missing: Vec<(HeldGrant, Option<String>)>,
}

impl MemberPlan {
    /// Whether applying the plan writes anything.
    pub fn changes_nothing(&self) -> bool {
        self.accounts_added.is_empty()
            && self.accounts_matched.is_empty()
            && self.accounts_removed.is_empty()
            && self.grants_added.is_empty()
            && self.grants_removed.is_empty()
            && self.grants_changed.is_empty()
    }
}

/// Compares the checked file with what Tessera holds. `identities` maps a folded user key to
/// the identity it matches (for keys whose account has none yet).
pub fn diff_members(
    rows: &[MemberRow],
    accounts: &[HeldAccount],
    grants: &[HeldGrant],
    identities: &HashMap<String, String>,
) -> MemberPlan {
    let mut plan = MemberPlan::default();
    let account_by_key: HashMap<String, &HeldAccount> =
        accounts.iter().map(|a| (fold(&a.user_key), a)).collect();
    let key_of_account: HashMap<&str, String> = accounts
        .iter()
        .map(|a| (a.id.as_str(), fold(&a.user_key)))
        .collect();
    // The identity behind each user key of the file, after this upload.
    let mut identity_of_key: HashMap<String, Option<&str>> = HashMap::new();
    // Folded user key of the file → the key as written (first spelling wins).
    let mut file_keys: HashMap<String, &str> = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = fold(&row.user_key);
        if file_keys.contains_key(&key) {
            continue;
        }
        file_keys.insert(key.clone(), &row.user_key);
        let matched = identities.get(&key).map(String::as_str);
        match account_by_key.get(&key) {
            None => {
                plan.accounts_added
                    .push((row.user_key.clone(), matched.map(str::to_owned)));
                identity_of_key.insert(key, matched);
            }
            Some(account) if account.identity_id.is_none() && matched.is_some() => {
                let identity = matched.unwrap_or_default().to_owned();
                plan.accounts_matched.push(((*account).clone(), identity));
                identity_of_key.insert(key, matched);
            }
            Some(account) => {
                identity_of_key.insert(key, account.identity_id.as_deref());
            }
        }
    }
    for account in accounts {
        if !file_keys.contains_key(&fold(&account.user_key)) {
            plan.accounts_removed.push(account.clone());
        }
    }

    // Grants made by Tessera, by (identity, role); external grants by (user key, role).
    let mut granted: HashSet<(&str, &str)> = HashSet::new();
    let mut external: HashMap<(String, &str), &HeldGrant> = HashMap::new();
    for g in grants {
        match (g.source, &g.identity_id, &g.account_id) {
            (GrantSource::External, _, Some(account)) => {
                match key_of_account.get(account.as_str()) {
                    Some(key) => {
                        external.insert((key.clone(), g.role_id.as_str()), g);
                    }
                    None => plan.grants_removed.push(g.clone()),
                }
            }
            (GrantSource::External, _, None) => plan.grants_removed.push(g.clone()),
            (_, Some(identity), _) if g.active => {
                granted.insert((identity.as_str(), g.role_id.as_str()));
            }
            (_, Some(_), _) => {}
            (_, None, _) => {}
        }
    }

    let mut in_file: HashSet<(String, &str)> = HashSet::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let key = fold(&row.user_key);
        let covered = identity_of_key
            .get(&key)
            .copied()
            .flatten()
            .is_some_and(|identity| granted.contains(&(identity, row.role_id.as_str())));
        in_file.insert((key.clone(), row.role_id.as_str()));
        if covered {
            continue;
        }
        plan.unauthorised.push(index);
        match external.get(&(key, row.role_id.as_str())) {
            None => plan.grants_added.push(index),
            Some(g) if g.ends_at != row.ends_at => {
                plan.grants_changed.push(((*g).clone(), row.ends_at));
            }
            Some(_) => {}
        }
    }
    for ((key, role), g) in &external {
        let still_external = in_file.contains(&(key.clone(), *role))
            && !identity_of_key
                .get(key)
                .copied()
                .flatten()
                .is_some_and(|identity| granted.contains(&(identity, *role)));
        if !still_external {
            plan.grants_removed.push((*g).clone());
        }
    }

    // Tessera's grants the file lacks.
    let key_of_identity: HashMap<&str, String> = accounts
        .iter()
        .filter_map(|a| a.identity_id.as_deref().map(|i| (i, fold(&a.user_key))))
        .chain(
            identity_of_key
                .iter()
                .filter_map(|(k, i)| i.map(|i| (i, k.clone()))),
        )
        .collect();
    for g in grants {
        if g.source == GrantSource::External {
            continue;
        }
        let Some(identity) = g.identity_id.as_deref() else {
            continue;
        };
        let key = key_of_identity.get(identity);
        let present = key.is_some_and(|k| in_file.contains(&(k.clone(), g.role_id.as_str())));
        if !present {
            let user_key = key.and_then(|k| {
                file_keys
                    .get(k)
                    .map(|u| u.to_string())
                    .or_else(|| account_by_key.get(k).map(|a| a.user_key.clone()))
            });
            plan.missing.push((g.clone(), user_key));
        }
    }
    plan.grants_removed.sort_by(|a, b| a.id.cmp(&b.id));
    plan.grants_removed.dedup_by(|a, b| a.id == b.id);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000_000;

    fn roles() -> RoleIndex {
        RoleIndex::new([
            ("Payroll", "viewer", "r-viewer"),
            ("Payroll", "approver", "r-approver"),
            ("Reports", "viewer", "r-reports-viewer"),
            ("Reports", "editor", "r-editor"),
        ])
    }

    fn parse(body: &str) -> Result<Vec<MemberRow>, RowErrors> {
        let format = MemberFormat::default();
        let raw = read_csv(body.as_bytes(), &format)?;
        check_rows(raw, &format, &roles(), NOW)
    }

    #[test]
    fn csv_with_bom_crlf_quotes_and_utf8_is_read() {
        let body = "\u{feff}User,Role,End_Date\r\n\"o'brien, sé\",approver,2031-01-01\r\nzoë,\"payroll/viewer\",\r\n\r\n";
        let rows = parse(body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].user_key, "o'brien, sé");
        assert_eq!(rows[0].role_id, "r-approver");
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[0].ends_at,
            Some(parse_end_date("2031-01-02T00:00:00Z").unwrap())
        );
        assert_eq!(rows[1].user_key, "zoë");
        assert_eq!(rows[1].role_id, "r-viewer");
        assert_eq!(rows[1].ends_at, None);
    }

    #[test]
    fn every_bad_row_is_reported_with_line_and_column() {
        let body = "user,role,end_date\n\
                    alice,editor,\n\
                    ,editor,\n\
                    bob,nope,\n\
                    carol,viewer,\n\
                    dave,editor,2001-01-01\n\
                    erin,editor,soon\n\
                    alice,EDITOR,\n";
        let errors = parse(body).unwrap_err();
        let got: Vec<(u64, Option<&str>)> = errors
            .errors
            .iter()
            .map(|e| (e.line, e.column.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, Some("user")),
                (4, Some("role")),
                (5, Some("role")),
                (6, Some("end_date")),
                (7, Some("end_date")),
                (8, Some("user")),
            ]
        );
        assert!(
            errors.errors[2].reason.contains("resource/role"),
            "viewer is ambiguous"
        );
        assert!(errors.errors[5].reason.contains("line 2"));
        assert_eq!(errors.total, 6);
    }

    #[test]
    fn a_missing_column_is_a_header_error_and_columns_are_configurable() {
        let errors = parse("login,role\nx,editor\n").unwrap_err();
        assert_eq!(errors.errors[0].line, 1);
        assert_eq!(errors.errors[0].column.as_deref(), Some("user"));
        let format = MemberFormat {
            user_column: "Login".into(),
            role_column: "Access".into(),
            ..Default::default()
        };
        let raw = read_csv(b"login;x,access\nx,editor\n", &format).unwrap_err();
        assert_eq!(raw.errors[0].column.as_deref(), Some("Login"));
        let raw = read_csv(b"LOGIN,ACCESS\nx,editor\n", &format).unwrap();
        assert_eq!(raw[0].1.user_key, "x");
        assert!(
            MemberFormat {
                role_column: "USER".into(),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_path_naming_roles_of_two_same_named_resources_is_refused() {
        let roles = RoleIndex::new([("Admins", "member", "a"), ("admins", "member", "b")]);
        assert!(
            roles
                .resolve("admins/member")
                .unwrap_err()
                .contains("several resources")
        );
        assert!(roles.resolve("member").is_err());
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let errors = parse_bytes(b"user,role\n\xff\xfe,editor\nok,editor\n").unwrap_err();
        assert_eq!(errors.errors[0].line, 2);
    }

    fn parse_bytes(body: &[u8]) -> Result<Vec<MemberRow>, RowErrors> {
        let format = MemberFormat::default();
        let raw = read_csv(body, &format)?;
        check_rows(raw, &format, &roles(), NOW)
    }

    // ---- the diff, on generated data ------------------------------------------------------

    const ROLES: [&str; 3] = ["r1", "r2", "r3"];

    /// A generated situation: which keys have accounts (and identities), which grants exist,
    /// and the file.
    #[derive(Debug, Clone)]
    struct Case {
        /// key index → (has account, account matched to its identity)
        accounts: Vec<(bool, bool)>,
        /// (key, role, source is external, end, started)
        grants: Vec<(usize, usize, bool, Option<i64>, bool)>,
        /// (key, role, end)
        file: Vec<(usize, usize, Option<i64>)>,
    }

    fn key(i: usize) -> String {
        // Vary case so folding matters.
        if i.is_multiple_of(2) {
            format!("User{i}")
        } else {
            format!("user{i}")
        }
    }
    fn identity(i: usize) -> String {
        format!("id{i}")
    }

    fn case() -> impl Strategy<Value = Case> {
        let keys = 6usize;
        let end = prop::option::of(0i64..3);
        (
            prop::collection::vec((any::<bool>(), any::<bool>()), keys),
            prop::collection::vec(
                (
                    0..keys,
                    0..3usize,
                    any::<bool>(),
                    end.clone(),
                    prop::bool::weighted(0.8),
                ),
                0..12,
            ),
            prop::collection::vec((0..keys, 0..3usize, end), 0..14),
        )
            .prop_map(|(accounts, grants, file)| Case {
                accounts,
                grants,
                file,
            })
    }

    /// State as the store would hold it.
    struct State {
        accounts: Vec<HeldAccount>,
        grants: Vec<HeldGrant>,
    }

    fn build(case: &Case) -> (State, Vec<MemberRow>, HashMap<String, String>) {
        let mut accounts = Vec::new();
        for (i, (has, matched)) in case.accounts.iter().enumerate() {
            if *has {
                accounts.push(HeldAccount {
                    id: format!("a{i}"),
                    user_key: key(i).to_uppercase(),
                    identity_id: matched.then(|| identity(i)),
                });
            }
        }
        let mut grants: Vec<HeldGrant> = Vec::new();
        for (n, (k, r, external, end, started)) in case.grants.iter().enumerate() {
            let account = accounts.iter().find(|a| a.id == format!("a{k}"));
            if *external {
                // External grants hang on accounts, one per (account, role).
                let Some(account) = account else { continue };
                if grants.iter().any(|g| {
                    g.source == GrantSource::External
                        && g.account_id.as_deref() == Some(&account.id)
                        && g.role_id == ROLES[*r]
                }) {
                    continue;
                }
                grants.push(HeldGrant {
                    id: format!("g{n}"),
                    role_id: ROLES[*r].into(),
                    identity_id: account.identity_id.clone(),
                    account_id: Some(account.id.clone()),
                    source: GrantSource::External,
                    active: true,
                    ends_at: end.map(|e| NOW + e),
                    version: 1,
                });
            } else {
                if grants.iter().any(|g| {
                    g.source == GrantSource::Api
                        && g.identity_id.as_deref() == Some(&identity(*k))
                        && g.role_id == ROLES[*r]
                }) {
                    continue;
                }
                grants.push(HeldGrant {
                    id: format!("g{n}"),
                    role_id: ROLES[*r].into(),
                    identity_id: Some(identity(*k)),
                    account_id: account.map(|a| a.id.clone()),
                    source: GrantSource::Api,
                    active: *started,
                    ends_at: None,
                    version: 1,
                });
            }
        }
        let mut rows: Vec<MemberRow> = Vec::new();
        for (line, (k, r, end)) in case.file.iter().enumerate() {
            if rows
                .iter()
                .any(|row| fold(&row.user_key) == fold(&key(*k)) && row.role_id == ROLES[*r])
            {
                continue;
            }
            rows.push(MemberRow {
                line: line as u64 + 2,
                user_key: key(*k),
                role_id: ROLES[*r].into(),
                ends_at: end.map(|e| NOW + e),
            });
        }
        // Every key matches its identity.
        let identities = (0..case.accounts.len())
            .map(|i| (fold(&key(i)), identity(i)))
            .collect();
        (State { accounts, grants }, rows, identities)
    }

    /// Applies a plan the way the store does.
    fn apply(state: &State, plan: &MemberPlan, rows: &[MemberRow]) -> State {
        let mut accounts: Vec<HeldAccount> = state
            .accounts
            .iter()
            .filter(|a| !plan.accounts_removed.contains(a))
            .cloned()
            .collect();
        for (account, identity) in &plan.accounts_matched {
            let a = accounts.iter_mut().find(|a| a.id == account.id).unwrap();
            a.identity_id = Some(identity.clone());
        }
        for (n, (user_key, identity)) in plan.accounts_added.iter().enumerate() {
            accounts.push(HeldAccount {
                id: format!("new{n}"),
                user_key: user_key.clone(),
                identity_id: identity.clone(),
            });
        }
        let removed: HashSet<&str> = plan
            .accounts_removed
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        let mut grants: Vec<HeldGrant> = state
            .grants
            .iter()
            .filter(|g| !plan.grants_removed.iter().any(|r| r.id == g.id))
            .map(|g| {
                let mut g = g.clone();
                if let Some((_, end)) = plan.grants_changed.iter().find(|(c, _)| c.id == g.id) {
                    g.ends_at = *end;
                }
                if g.account_id.as_deref().is_some_and(|a| removed.contains(a)) {
                    g.account_id = None;
                }
                g
            })
            .collect();
        for (n, &i) in plan.grants_added.iter().enumerate() {
            let (user_key, role, end) = (&rows[i].user_key, &rows[i].role_id, &rows[i].ends_at);
            let account = accounts
                .iter()
                .find(|a| fold(&a.user_key) == fold(user_key))
                .unwrap();
            grants.push(HeldGrant {
                id: format!("newg{n}"),
                role_id: role.clone(),
                identity_id: account.identity_id.clone(),
                account_id: Some(account.id.clone()),
                source: GrantSource::External,
                active: true,
                ends_at: *end,
                version: 1,
            });
        }
        State { accounts, grants }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn applying_the_diff_makes_tessera_agree_with_the_file(case in case()) {
            let (state, rows, identities) = build(&case);
            let plan = diff_members(&rows, &state.accounts, &state.grants, &identities);
            let after = apply(&state, &plan, &rows);

            // Accounts: exactly the file's user keys, each matched to its identity.
            let mut keys: Vec<String> = after.accounts.iter().map(|a| fold(&a.user_key)).collect();
            keys.sort();
            let mut want: Vec<String> = rows.iter().map(|r| fold(&r.user_key)).collect();
            want.sort();
            want.dedup();
            prop_assert_eq!(&keys, &want);
            prop_assert!(after.accounts.iter().all(|a| a.identity_id.is_some()));

            let identity_of = |k: &str| identities.get(&fold(k)).cloned();
            // Only grants that have started explain access the file shows.
            let granted = |identity: &str, role: &str| after.grants.iter().any(|g| {
                g.source != GrantSource::External
                    && g.active
                    && g.identity_id.as_deref() == Some(identity)
                    && g.role_id == role
            });
            let externals = |k: &str, role: &str| -> Vec<&HeldGrant> {
                let account = after.accounts.iter().find(|a| fold(&a.user_key) == fold(k));
                after.grants.iter().filter(|g| {
                    g.source == GrantSource::External
                        && g.role_id == role
                        && account.is_some_and(|a| g.account_id.as_deref() == Some(a.id.as_str()))
                }).collect()
            };
            // Each row is explained by Tessera's grant, or recorded once as external access
            // with the file's end date, and only then reported as unauthorised.
            let mut unauthorised = Vec::new();
            for (index, row) in rows.iter().enumerate() {
                let covered = identity_of(&row.user_key)
                    .is_some_and(|i| granted(&i, &row.role_id));
                let ext = externals(&row.user_key, &row.role_id);
                if covered {
                    prop_assert!(ext.is_empty(), "covered row also external: {:?}", row);
                } else {
                    prop_assert_eq!(ext.len(), 1, "row {:?}", row);
                    prop_assert_eq!(ext[0].ends_at, row.ends_at);
                    unauthorised.push(index);
                }
            }
            prop_assert_eq!(&plan.unauthorised, &unauthorised);
            // No external grant the file does not show.
            let in_file: HashSet<(String, String)> =
                rows.iter().map(|r| (fold(&r.user_key), r.role_id.clone())).collect();
            for g in after.grants.iter().filter(|g| g.source == GrantSource::External) {
                let account = after.accounts.iter().find(|a| g.account_id.as_deref() == Some(a.id.as_str()));
                let account = account.expect("external grants keep their account");
                prop_assert!(in_file.contains(&(fold(&account.user_key), g.role_id.clone())));
            }
            // Missing: exactly Tessera's grants the file lacks.
            let mut missing: Vec<&str> = plan.missing.iter().map(|(g, _)| g.id.as_str()).collect();
            missing.sort();
            let mut want_missing: Vec<&str> = state.grants.iter().filter(|g| {
                g.source != GrantSource::External
                    && !rows.iter().any(|r| {
                        identity_of(&r.user_key).as_deref() == g.identity_id.as_deref()
                            && r.role_id == g.role_id
                    })
            }).map(|g| g.id.as_str()).collect();
            want_missing.sort();
            prop_assert_eq!(missing, want_missing);

            // The same file again changes nothing.
            let again = diff_members(&rows, &after.accounts, &after.grants, &identities);
            prop_assert!(again.changes_nothing(), "second upload changed: {:?}", again);
        }
    }
}

//! CSV data sources (Apporetum's *Update Data Source Users*): the full user list of a source,
//! checked row by row and compared with the identities the source holds.
//!
//! Identities are found by the data source's matching key. Listed users are created or
//! updated; a suspended identity that is listed again becomes active; identities the list
//! lacks are suspended, deleted or left alone, as the data source says.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{IdentityAttributes, IdentityStatus, MatchingKey, fold};
use crate::csv_file::{CsvFile, RowErrors};

string_enum! {
    /// What happens to identities a full user list no longer contains.
    MissingUsers { Suspend => "suspend", Delete => "delete", Ignore => "ignore" }
}

/// The columns a user list may have (header names, any case). The data source's matching key
/// column is required; `user_name` defaults to it.
pub const COLUMNS: &[&str] = &[
    "user_name",
    "email",
    "employee_number",
    "external_id",
    "display_name",
    "given_name",
    "family_name",
    "department",
    "job_title",
    "manager",
];

pub fn key_column(key: MatchingKey) -> &'static str {
    match key {
        MatchingKey::UserName => "user_name",
        MatchingKey::Email => "email",
        MatchingKey::EmployeeNumber => "employee_number",
    }
}

/// A user as given: (column, cell) pairs, empty cells left out. Columns are names from
/// [`COLUMNS`], so a row does not repeat them.
pub type RawUser = Vec<(&'static str, String)>;

fn column_name(name: &str) -> Option<&'static str> {
    COLUMNS.iter().copied().find(|c| *c == name)
}

/// A checked user row.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub line: u64,
    /// The matching key's value, folded for comparison.
    pub key: String,
    pub attributes: IdentityAttributes,
    /// The manager's matching key value, folded (another user of the list).
    pub manager_key: Option<String>,
}

/// The folded form of a matching key value (employee numbers are compared as written).
pub fn fold_key(key: MatchingKey, value: &str) -> String {
    match key {
        MatchingKey::EmployeeNumber => value.trim().to_owned(),
        _ => fold(value.trim()),
    }
}

fn key_value(key: MatchingKey, attributes: &IdentityAttributes) -> Option<&str> {
    match key {
        MatchingKey::UserName => Some(attributes.user_name.as_str()),
        MatchingKey::Email => attributes.email.as_deref(),
        MatchingKey::EmployeeNumber => attributes.employee_number.as_deref(),
    }
}

/// Reads a CSV user list (UTF-8, optional BOM, CRLF or LF, RFC 4180 quoting).
pub fn read_csv(body: &[u8], key: MatchingKey) -> Result<Vec<(u64, RawUser)>, RowErrors> {
    let mut errors = RowErrors::default();
    let Some(file) = CsvFile::open(body, &mut errors) else {
        return Err(errors);
    };
    for (i, h) in file.headers.iter().enumerate() {
        if !COLUMNS.contains(&h.as_str()) {
            errors.push(
                1,
                Some(h),
                format!("unknown column; the columns are {}", COLUMNS.join(", ")),
            );
        } else if file.headers[..i].contains(h) {
            errors.push(1, Some(h), "the column appears twice");
        }
    }
    if !file.headers.iter().any(|h| h == key_column(key)) {
        errors.push(
            1,
            Some(key_column(key)),
            format!(
                "the data source matches users by {}, so that column is required",
                key_column(key)
            ),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let headers: Vec<&'static str> = file.headers.iter().filter_map(|h| column_name(h)).collect();
    let mut rows = Vec::new();
    file.for_each(&mut errors, |line, record| {
        let user: RawUser = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(h, v)| (*h, v.trim().to_owned()))
            .collect();
        rows.push((line, user));
    });
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// Checks raw users: the matching key present and unique, valid attributes, unique user
/// names, and managers that are users of the same list (not themselves).
pub fn check_users(raw: Vec<(u64, RawUser)>, key: MatchingKey) -> Result<Vec<UserRow>, RowErrors> {
    let mut errors = RowErrors::default();
    let mut rows: Vec<UserRow> = Vec::with_capacity(raw.len());
    let mut keys: HashMap<String, u64> = HashMap::with_capacity(raw.len());
    let mut user_names: HashMap<String, u64> = HashMap::with_capacity(raw.len());
    for (line, mut user) in raw {
        let take = |user: &mut RawUser, c: &str| {
            let i = user.iter().position(|(k, _)| *k == c)?;
            Some(user.swap_remove(i).1)
        };
        let Some(key_value) = user
            .iter()
            .find(|(k, _)| *k == key_column(key))
            .map(|(_, v)| v.clone())
        else {
            errors.push(line, Some(key_column(key)), "the matching key is required");
            continue;
        };
        let attributes = IdentityAttributes {
            user_name: take(&mut user, "user_name").unwrap_or_else(|| key_value.clone()),
            external_id: take(&mut user, "external_id"),
            display_name: take(&mut user, "display_name"),
            given_name: take(&mut user, "given_name"),
            family_name: take(&mut user, "family_name"),
            email: take(&mut user, "email"),
            employee_number: take(&mut user, "employee_number"),
            department: take(&mut user, "department"),
            job_title: take(&mut user, "job_title"),
            manager_id: None,
            source_doc: None,
        };
        if let Err(e) = attributes.validate() {
            let column = if e.field == "userName" {
                "user_name"
            } else {
                e.field
            };
            errors.push(line, Some(column), e.reason);
            continue;
        }
        let too_long = [
            ("external_id", &attributes.external_id),
            ("display_name", &attributes.display_name),
            ("given_name", &attributes.given_name),
            ("family_name", &attributes.family_name),
            ("employee_number", &attributes.employee_number),
            ("department", &attributes.department),
            ("job_title", &attributes.job_title),
        ]
        .into_iter()
        .find(|(_, v)| {
            v.as_deref()
                .is_some_and(|v| v.chars().count() > 256 || v.chars().any(char::is_control))
        });
        if let Some((column, _)) = too_long {
            errors.push(line, Some(column), "at most 256 printable characters");
            continue;
        }
        let folded = fold_key(key, &key_value);
        if let Some(first) = keys.insert(folded.clone(), line) {
            errors.push(
                line,
                Some(key_column(key)),
                format!("the same {} is already on line {first}", key_column(key)),
            );
            continue;
        }
        if let Some(first) = user_names.insert(fold(&attributes.user_name), line) {
            errors.push(
                line,
                Some("user_name"),
                format!("the same user name is already on line {first}"),
            );
            continue;
        }
        let manager_key = take(&mut user, "manager").map(|m| fold_key(key, &m));
        rows.push(UserRow {
            line,
            key: folded,
            attributes,
            manager_key,
        });
    }
    for row in &rows {
        if let Some(m) = &row.manager_key {
            if *m == row.key {
                errors.push(
                    row.line,
                    Some("manager"),
                    "a user cannot be their own manager",
                );
            } else if !keys.contains_key(m) {
                errors.push(
                    row.line,
                    Some("manager"),
                    "the manager is not a user of this list",
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// An identity the data source holds (not deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldIdentity {
    pub id: String,
    pub status: IdentityStatus,
    pub attributes: IdentityAttributes,
    pub version: i64,
}

/// What a user list changes.
#[derive(Debug, Default, PartialEq)]
pub struct UserPlan {
    /// Rows (by index into the checked rows) with no identity yet.
    pub create: Vec<usize>,
    /// (identity, row index): attributes or manager differ, or the identity was suspended.
    pub update: Vec<(HeldIdentity, usize)>,
    /// Identities the list lacks, with what to do to them.
    pub missing: Vec<HeldIdentity>,
    pub missing_action: Option<MissingUsers>,
}

impl UserPlan {
    pub fn changes_nothing(&self) -> bool {
        self.create.is_empty()
            && self.update.is_empty()
            && (self.missing.is_empty() || self.missing_action == Some(MissingUsers::Ignore))
    }
}

/// The attributes a list sets, for comparing with what is held (the stored source document and
/// the manager are compared separately).
fn listed(a: &IdentityAttributes) -> IdentityAttributes {
    IdentityAttributes {
        manager_id: None,
        source_doc: None,
        ..a.clone()
    }
}

/// Compares checked rows with the source's identities. `manager_of` resolves a row's manager
/// key to the id of the identity already holding that key (new managers resolve when applied,
/// so a row with a new manager always counts as an update).
pub fn diff_users(
    rows: &[UserRow],
    held: &[HeldIdentity],
    key: MatchingKey,
    missing: MissingUsers,
) -> UserPlan {
    let by_key: HashMap<String, &HeldIdentity> = held
        .iter()
        .filter_map(|h| key_value(key, &h.attributes).map(|v| (fold_key(key, v), h)))
        .collect();
    let id_of_key: HashMap<&str, &str> = by_key
        .iter()
        .map(|(k, h)| (k.as_str(), h.id.as_str()))
        .collect();
    let mut plan = UserPlan {
        missing_action: Some(missing),
        ..Default::default()
    };
    let mut seen: HashSet<&str> = HashSet::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match by_key.get(&row.key) {
            None => plan.create.push(i),
            Some(h) => {
                seen.insert(h.id.as_str());
                let manager = row
                    .manager_key
                    .as_deref()
                    .map(|m| id_of_key.get(m).copied());
                let manager_same = match manager {
                    None => h.attributes.manager_id.is_none(),
                    Some(Some(id)) => h.attributes.manager_id.as_deref() == Some(id),
                    Some(None) => false,
                };
                if h.status != IdentityStatus::Active
                    || listed(&h.attributes) != listed(&row.attributes)
                    || !manager_same
                {
                    plan.update.push(((*h).clone(), i));
                }
            }
        }
    }
    for h in held {
        let in_list = seen.contains(h.id.as_str());
        let already_suspended =
            missing == MissingUsers::Suspend && h.status == IdentityStatus::Suspended;
        if !in_list && !already_suspended {
            plan.missing.push(h.clone());
        }
    }
    if missing == MissingUsers::Ignore {
        plan.missing.clear();
    }
    plan
}

/// User names are unique among a source's identities that are not deleted: a listed user may
/// not take the name another identity keeps after the list is applied.
pub fn check_user_names(
    rows: &[UserRow],
    held: &[HeldIdentity],
    plan: &UserPlan,
) -> Result<(), RowErrors> {
    let updated: HashSet<&str> = plan.update.iter().map(|(h, _)| h.id.as_str()).collect();
    let deleted: HashSet<&str> = match plan.missing_action {
        Some(MissingUsers::Delete) => plan.missing.iter().map(|h| h.id.as_str()).collect(),
        _ => HashSet::new(),
    };
    let kept: HashMap<String, &str> = held
        .iter()
        .filter(|h| !updated.contains(h.id.as_str()) && !deleted.contains(h.id.as_str()))
        .map(|h| (fold(&h.attributes.user_name), h.id.as_str()))
        .collect();
    let mut errors = RowErrors::default();
    let mut check = |i: usize, own: Option<&str>| {
        let row = &rows[i];
        if let Some(holder) = kept.get(&fold(&row.attributes.user_name))
            && Some(*holder) != own
        {
            errors.push(
                row.line,
                Some("user_name"),
                format!(
                    "the user name {:?} belongs to another identity of this source",
                    row.attributes.user_name
                ),
            );
        }
    };
    for &i in &plan.create {
        check(i, None);
    }
    for (h, i) in &plan.update {
        check(*i, Some(h.id.as_str()));
    }
    // Updates run one after another: taking a name another updated identity gives up in the
    // same list (a swap) would clash half-way.
    let renamed_from: HashMap<String, &str> = plan
        .update
        .iter()
        .filter(|(h, i)| fold(&h.attributes.user_name) != fold(&rows[*i].attributes.user_name))
        .map(|(h, _)| (fold(&h.attributes.user_name), h.id.as_str()))
        .collect();
    for (h, i) in &plan.update {
        let row = &rows[*i];
        let new = fold(&row.attributes.user_name);
        if new != fold(&h.attributes.user_name)
            && renamed_from
                .get(&new)
                .is_some_and(|other| *other != h.id.as_str())
        {
            errors.push(
                row.line,
                Some("user_name"),
                format!(
                    "{:?} is the old name of another user renamed by this list; rename in two uploads",
                    row.attributes.user_name
                ),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCounts {
    pub created: usize,
    pub updated: usize,
    pub suspended: usize,
    pub deleted: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, key: MatchingKey) -> Result<Vec<UserRow>, RowErrors> {
        check_users(read_csv(body.as_bytes(), key)?, key)
    }

    #[test]
    fn users_are_read_with_any_column_order_and_case() {
        let rows = parse(
            "\u{feff}Email,USER_NAME,Manager,Department\r\nBoss@x.org,boss,,Exec\r\nann@x.org,ann,boss@X.org,\"R&D, Lab\"\r\n",
            MatchingKey::Email,
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, "boss@x.org");
        assert_eq!(rows[1].attributes.department.as_deref(), Some("R&D, Lab"));
        assert_eq!(rows[1].manager_key.as_deref(), Some("boss@x.org"));
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn bad_lists_name_every_problem() {
        let errors = parse("nickname,user_name\nx,y\n", MatchingKey::UserName).unwrap_err();
        assert_eq!(errors.errors[0].column.as_deref(), Some("nickname"));
        let errors = parse("user_name\nx\n", MatchingKey::Email).unwrap_err();
        assert_eq!(errors.errors[0].column.as_deref(), Some("email"));
        let errors = parse(
            "user_name,email,manager\na,a@x,\nb,not-an-email,\nA,c@x,\nd,d@x,zed\ne,e@x,e\n,f@x,\n",
            MatchingKey::UserName,
        )
        .unwrap_err();
        let got: Vec<(u64, Option<&str>)> = errors
            .errors
            .iter()
            .map(|e| (e.line, e.column.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, Some("email")),
                (4, Some("user_name")),
                (7, Some("user_name")),
                (5, Some("manager")),
                (6, Some("manager")),
            ]
        );
    }

    fn held(id: &str, user: &str, status: IdentityStatus) -> HeldIdentity {
        HeldIdentity {
            id: id.into(),
            status,
            attributes: IdentityAttributes {
                user_name: user.into(),
                ..Default::default()
            },
            version: 1,
        }
    }

    #[test]
    fn user_names_freed_by_deletion_or_rename_may_be_taken_but_swaps_are_refused() {
        let held_ids = vec![
            held("1", "old", IdentityStatus::Active),
            held("2", "gone", IdentityStatus::Active),
        ];
        let check = |csv: &str, missing: MissingUsers| {
            let rows = parse(csv, MatchingKey::Email).unwrap();
            let mut held_ids = held_ids.clone();
            held_ids[0].attributes.email = Some("one@x".into());
            held_ids[1].attributes.email = Some("two@x".into());
            let plan = diff_users(&rows, &held_ids, MatchingKey::Email, missing);
            check_user_names(&rows, &held_ids, &plan)
        };
        // "gone" leaves the list and is deleted: a new user may take the name.
        assert!(
            check(
                "email,user_name
one@x,old
new@x,gone
",
                MissingUsers::Delete
            )
            .is_ok()
        );
        // Suspended, it keeps the name.
        assert!(
            check(
                "email,user_name
one@x,old
new@x,gone
",
                MissingUsers::Suspend
            )
            .is_err()
        );
        // A rename frees the old name for a new user.
        assert!(
            check(
                "email,user_name
one@x,renamed
two@x,gone
new@x,old
",
                MissingUsers::Suspend
            )
            .is_ok()
        );
        // Two users swapping names would clash half-way.
        let swap = check(
            "email,user_name
one@x,gone
two@x,old
",
            MissingUsers::Suspend,
        )
        .unwrap_err();
        assert_eq!(swap.errors[0].column.as_deref(), Some("user_name"));
    }

    #[test]
    fn the_diff_creates_updates_reactivates_and_handles_the_missing() {
        let rows = parse(
            "user_name,department\nann,Sales\nbob,\nnew,\n",
            MatchingKey::UserName,
        )
        .unwrap();
        let held_ids = vec![
            held("1", "ann", IdentityStatus::Active),
            held("2", "BOB", IdentityStatus::Suspended),
            held("3", "gone", IdentityStatus::Active),
            held("4", "long-gone", IdentityStatus::Suspended),
        ];
        let plan = diff_users(
            &rows,
            &held_ids,
            MatchingKey::UserName,
            MissingUsers::Suspend,
        );
        assert_eq!(plan.create, vec![2]);
        let updated: Vec<&str> = plan.update.iter().map(|(h, _)| h.id.as_str()).collect();
        assert_eq!(updated, vec!["1", "2"], "ann's department, bob's return");
        let missing: Vec<&str> = plan.missing.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(
            missing,
            vec!["3"],
            "already suspended identities stay as they are"
        );
        let plan = diff_users(
            &rows,
            &held_ids,
            MatchingKey::UserName,
            MissingUsers::Delete,
        );
        assert_eq!(plan.missing.len(), 2);
        let plan = diff_users(
            &rows,
            &held_ids,
            MatchingKey::UserName,
            MissingUsers::Ignore,
        );
        assert!(plan.missing.is_empty());
    }
}

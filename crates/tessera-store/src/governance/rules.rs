//! Rules and bulk actions in the store (rules in `tessera_domain::governance::rules`).
//!
//! Applying a filter walks the target table in keyset pages of [`APPLY_BATCH`], narrowed in
//! SQL by application, resource type, name pattern (`LIKE` on the folded name) and tags (the
//! indexed `resource_tags`); the domain's `matches` then decides for each candidate, and each
//! change goes through the resource's or role's own `update` (version check, validation,
//! audit with before and after).

use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_domain::directory::{InvalidInput, fold};
use tessera_domain::governance::SettingOverrides;
use tessera_domain::governance::rules::{
    self, DEFAULT_RULE_PRIORITY, ItemFacts, ItemFilter, Rule, RuleTarget, apply_actions,
    like_pattern, merged_actions, restricted_to,
};
use tessera_domain::ids::new_id;

use super::{actor_ref, check_version, from_json, resources, roles, to_json};
use crate::directory::MAX_PAGE;
use crate::sql::{Arg, Sql, bind_args};
use crate::{ChangeContext, Db, StoreError, StoreResult, Tx, audit, with_conn, with_pool};

/// Items read per page while applying.
pub const APPLY_BATCH: i64 = 500;
/// Changed items a report lists (the counts cover all).
pub const REPORT_ITEMS: usize = 100;
/// Rules per target.
pub const MAX_RULES: i64 = 1000;
/// Items one rule application or bulk action may match: one request's transaction stays
/// bounded (and SQLite's write turn short).
pub const MAX_APPLY_ITEMS: u64 = 10_000;

#[derive(sqlx::FromRow)]
struct RuleRow {
    id: String,
    name: String,
    description: Option<String>,
    target: String,
    filter: String,
    actions: String,
    priority: i64,
    enabled: bool,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

const COLUMNS: &str = "id, name, description, target, filter, actions, priority, enabled, \
     version, created_at, updated_at";

impl TryFrom<RuleRow> for Rule {
    type Error = StoreError;
    fn try_from(r: RuleRow) -> StoreResult<Self> {
        Ok(Rule {
            target: RuleTarget::parse(&r.target).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown rule target {:?}", r.target))
            })?,
            filter: from_json("rules.filter", &r.filter)?,
            actions: from_json("rules.actions", &r.actions)?,
            id: r.id,
            name: r.name,
            description: r.description,
            priority: r.priority,
            enabled: r.enabled,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// One item a rule or bulk action changed (or would change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemChange {
    pub id: String,
    pub application_id: String,
    pub name: String,
    pub before: SettingOverrides,
    pub after: SettingOverrides,
}

/// What applying a filter did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub matched: u64,
    pub changed: u64,
    /// The first [`REPORT_ITEMS`] changed items.
    pub items: Vec<ItemChange>,
}

/// A resource or role as a filter sees it, with its current settings.
#[derive(sqlx::FromRow)]
struct CandidateRow {
    id: String,
    application_id: String,
    resource_type: String,
    name: String,
    tags: String,
    requestable: Option<bool>,
    workflow_id: Option<String>,
    durations: Option<String>,
    owner_kind: Option<String>,
    owner_id: Option<String>,
    maintainers: Option<String>,
}

struct Candidate {
    id: String,
    application_id: String,
    resource_type: String,
    name: String,
    tags: Vec<String>,
    overrides: SettingOverrides,
}

impl TryFrom<CandidateRow> for Candidate {
    type Error = StoreError;
    fn try_from(r: CandidateRow) -> StoreResult<Self> {
        Ok(Candidate {
            tags: from_json("resources.tags", &r.tags)?,
            // Roles' rows carry NULL owner and maintainers, so one conversion serves both.
            overrides: resources::overrides_from_columns(
                r.requestable,
                r.workflow_id,
                r.durations.as_deref(),
                r.owner_kind,
                r.owner_id,
                r.maintainers.as_deref(),
            )?,
            id: r.id,
            application_id: r.application_id,
            resource_type: r.resource_type,
            name: r.name,
        })
    }
}

impl Candidate {
    fn facts(&self) -> ItemFacts<'_> {
        ItemFacts {
            application_id: &self.application_id,
            resource_type: &self.resource_type,
            name: &self.name,
            tags: &self.tags,
        }
    }
}

/// A page of the items the filter may match, after `after`, in id order.
async fn candidates(
    tx: &mut Tx,
    target: RuleTarget,
    filter: &ItemFilter,
    after: &str,
) -> StoreResult<Vec<Candidate>> {
    let mut sql = Sql::new(tx.backend());
    // `i` is the item, `r` the resource whose type and tags count (for a resource, itself).
    match target {
        RuleTarget::Resources => sql.push(
            "SELECT i.id, i.application_id, i.resource_type, i.name, i.tags, i.requestable, \
             i.workflow_id, i.durations, i.owner_kind, i.owner_id, i.maintainers \
             FROM resources i JOIN resources r ON r.id = i.id WHERE i.id > ",
        ),
        RuleTarget::Roles => sql.push(
            "SELECT i.id, i.application_id, r.resource_type, i.name, r.tags, i.requestable, \
             i.workflow_id, i.durations, CAST(NULL AS TEXT) AS owner_kind, \
             CAST(NULL AS TEXT) AS owner_id, CAST(NULL AS TEXT) AS maintainers \
             FROM roles i JOIN resources r ON r.id = i.resource_id WHERE i.id > ",
        ),
    };
    sql.text_arg(after);
    if let Some(app) = &filter.application_id {
        sql.push(" AND i.application_id = ").text_arg(app);
    }
    if let Some(t) = &filter.resource_type {
        sql.push(" AND r.resource_type = ").text_arg(t);
    }
    if let Some(p) = &filter.name_pattern {
        sql.push(" AND i.name_lower LIKE ")
            .arg(Arg::Text(like_pattern(p)))
            .push(" ESCAPE '\\'");
    }
    for tag in &filter.tags {
        sql.push(" AND EXISTS (SELECT 1 FROM resource_tags t WHERE t.resource_id = r.id AND t.tag_lower = ")
            .arg(Arg::Text(fold(tag)))
            .push(")");
    }
    sql.push(" ORDER BY i.id LIMIT ").arg(Arg::Int(APPLY_BATCH));
    let rows: Vec<CandidateRow> = with_conn!(tx, |conn| {
        bind_args!(
            sqlx::query_as(sqlx::AssertSqlSafe(sql.text.clone())),
            &sql.args
        )
        .fetch_all(&mut *conn)
        .await?
    });
    rows.into_iter().map(Candidate::try_from).collect()
}

/// What to set on each matched item.
enum Setting<'a> {
    /// The bulk action's settings.
    Bulk(&'a SettingOverrides),
    /// The settings `rule` sets, each with the value the enabled rules matching the item
    /// give it by priority.
    Rule { rule: &'a Rule, all: &'a [Rule] },
}

/// Applies settings to every item the filter matches (`dry_run`: reports only).
async fn apply(
    tx: &mut Tx,
    ctx: &ChangeContext,
    target: RuleTarget,
    filter: &ItemFilter,
    setting: Setting<'_>,
    dry_run: bool,
) -> StoreResult<ApplyReport> {
    let mut report = ApplyReport::default();
    let mut after = String::new();
    loop {
        let page = candidates(tx, target, filter, &after).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id.clone();
        let full = page.len() as i64 == APPLY_BATCH;
        for item in page {
            if !rules::matches(filter, &item.facts()) {
                continue;
            }
            report.matched += 1;
            if report.matched > MAX_APPLY_ITEMS {
                return Err(InvalidInput::new(
                    "filter",
                    format!(
                        "matches more than {MAX_APPLY_ITEMS} items; narrow it (by application, \
                         type, name or tags), or create the rule with apply_to_existing=false"
                    ),
                )
                .into());
            }
            let actions = match setting {
                Setting::Bulk(a) => a.clone(),
                Setting::Rule { rule, all } => {
                    let matching = all
                        .iter()
                        .filter(|r| rules::matches(&r.filter, &item.facts()));
                    restricted_to(&merged_actions(matching).0, &rule.actions)
                }
            };
            let mut wanted = item.overrides.clone();
            apply_actions(&mut wanted, &actions, false);
            if wanted == item.overrides {
                continue;
            }
            report.changed += 1;
            if !dry_run {
                let set = |o: &mut SettingOverrides| apply_actions(o, &actions, false);
                match target {
                    RuleTarget::Resources => {
                        resources::update(tx, ctx, &item.id, None, |r| {
                            set(&mut r.overrides);
                            Ok(())
                        })
                        .await?;
                    }
                    RuleTarget::Roles => {
                        roles::update(tx, ctx, &item.id, None, |r| {
                            set(&mut r.overrides);
                            Ok(())
                        })
                        .await?;
                    }
                }
            }
            if report.items.len() < REPORT_ITEMS {
                report.items.push(ItemChange {
                    id: item.id,
                    application_id: item.application_id,
                    name: item.name,
                    before: item.overrides,
                    after: wanted,
                });
            }
        }
        if !full {
            break;
        }
    }
    Ok(report)
}

async fn enabled_rules(tx: &mut Tx, target: RuleTarget) -> StoreResult<Vec<Rule>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM rules WHERE target = $1 AND enabled = TRUE ORDER BY priority, id"
    );
    let rows: Vec<RuleRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(target.as_str())
            .fetch_all(&mut *conn)
            .await?
    });
    rows.into_iter().map(Rule::try_from).collect()
}

/// The settings the enabled rules give a new item (as defaults: the caller keeps any value it
/// set explicitly), and the rules that gave them.
pub(crate) async fn defaults_for_new(
    tx: &mut Tx,
    target: RuleTarget,
    item: &ItemFacts<'_>,
) -> StoreResult<(SettingOverrides, Vec<String>)> {
    let rules = enabled_rules(tx, target).await?;
    Ok(merged_actions(
        rules.iter().filter(|r| rules::matches(&r.filter, item)),
    ))
}

// ---------------------------------------------------------------------------------------------
// Rules

#[derive(Debug, Clone)]
pub struct NewRule {
    pub name: String,
    pub description: Option<String>,
    pub target: RuleTarget,
    pub filter: ItemFilter,
    pub actions: SettingOverrides,
    pub priority: Option<i64>,
    pub enabled: bool,
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Conflict(format!("a rule named {name:?} already exists"))
}

/// Creates a rule and, when it is enabled and `apply_to_existing`, sets its settings on the
/// items it matches now (each with the precedence of every other enabled rule).
pub async fn create(
    tx: &mut Tx,
    ctx: &ChangeContext,
    new: NewRule,
    apply_to_existing: bool,
) -> StoreResult<(Rule, Option<ApplyReport>)> {
    let now = tx.now();
    let mut rule = Rule {
        id: new_id(),
        name: new.name,
        description: new.description,
        target: new.target,
        filter: new.filter,
        actions: new.actions,
        priority: new.priority.unwrap_or(DEFAULT_RULE_PRIORITY),
        enabled: new.enabled,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    rules::validate_rule(&mut rule)?;
    super::check_principals(tx, "actions.owner", rule.actions.owner.iter()).await?;
    super::check_principals(
        tx,
        "actions.maintainers",
        rule.actions.maintainers.iter().flatten(),
    )
    .await?;
    let count: i64 = with_conn!(tx, |conn| {
        sqlx::query_scalar("SELECT COUNT(*) FROM rules WHERE target = $1")
            .bind(rule.target.as_str())
            .fetch_one(&mut *conn)
            .await?
    });
    if count >= MAX_RULES {
        return Err(
            InvalidInput::new("target", format!("at most {MAX_RULES} rules per target")).into(),
        );
    }
    let r = &rule;
    let inserted = with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO rules (id, name, name_lower, description, target, filter, actions, \
             priority, enabled, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&r.id)
        .bind(&r.name)
        .bind(fold(&r.name))
        .bind(&r.description)
        .bind(r.target.as_str())
        .bind(to_json(&r.filter))
        .bind(to_json(&r.actions))
        .bind(r.priority)
        .bind(r.enabled)
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&rule.name));
        }
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("rule.create", "rule", Some(&rule.id))
            .with_details(json!({ "after": rule })),
    )
    .await?;
    let report = match rule.enabled && apply_to_existing {
        true => Some(apply_rule(tx, ctx, &rule).await?),
        false => None,
    };
    Ok((rule, report))
}

async fn apply_rule(tx: &mut Tx, ctx: &ChangeContext, rule: &Rule) -> StoreResult<ApplyReport> {
    let all = enabled_rules(tx, rule.target).await?;
    let setting = Setting::Rule { rule, all: &all };
    apply(tx, ctx, rule.target, &rule.filter, setting, false).await
}

async fn get_in(tx: &mut Tx, id: &str) -> StoreResult<Rule> {
    let sql = format!("SELECT {COLUMNS} FROM rules WHERE id = $1");
    let row: Option<RuleRow> = with_conn!(tx, |conn| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("rule", id))?
        .try_into()
}

pub async fn get(db: &Db, id: &str) -> StoreResult<Rule> {
    let sql = format!("SELECT {COLUMNS} FROM rules WHERE id = $1");
    let row: Option<RuleRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("rule", id))?
        .try_into()
}

/// A page of rules in creation order, after the id `after`.
pub async fn list(
    db: &Db,
    target: Option<RuleTarget>,
    enabled: Option<bool>,
    after: Option<&str>,
    limit: i64,
) -> StoreResult<Vec<Rule>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM rules WHERE ($1 IS NULL OR target = $1) \
         AND ($2 IS NULL OR enabled = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    );
    let rows: Vec<RuleRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(target.map(RuleTarget::as_str))
            .bind(enabled)
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(Rule::try_from).collect()
}

/// Loads the rule, lets `change` edit it and writes it back; an enabled rule whose filter,
/// settings, priority or state changed is applied again to what it matches.
pub async fn update(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
    change: impl FnOnce(&mut Rule) -> StoreResult<()>,
) -> StoreResult<(Rule, Option<ApplyReport>)> {
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    let mut rule = before.clone();
    change(&mut rule)?;
    if rule.target != before.target {
        return Err(
            InvalidInput::new("target", "a rule keeps its target; create another rule").into(),
        );
    }
    rules::validate_rule(&mut rule)?;
    if rule == before {
        return Ok((before, None));
    }
    if rule.actions != before.actions {
        super::check_principals(tx, "actions.owner", rule.actions.owner.iter()).await?;
        super::check_principals(
            tx,
            "actions.maintainers",
            rule.actions.maintainers.iter().flatten(),
        )
        .await?;
    }
    rule.version = before.version + 1;
    rule.updated_at = tx.now();
    let r = &rule;
    let updated = with_conn!(tx, |conn| {
        sqlx::query(
            "UPDATE rules SET name = $1, name_lower = $2, description = $3, filter = $4, \
             actions = $5, priority = $6, enabled = $7, version = $8, updated_at = $9 \
             WHERE id = $10 AND version = $11",
        )
        .bind(&r.name)
        .bind(fold(&r.name))
        .bind(&r.description)
        .bind(to_json(&r.filter))
        .bind(to_json(&r.actions))
        .bind(r.priority)
        .bind(r.enabled)
        .bind(r.version)
        .bind(r.updated_at)
        .bind(&r.id)
        .bind(before.version)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    });
    match updated {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(name_taken(&rule.name));
        }
        Ok(0) => return Err(super::lost_race(expected_version, before.version)),
        other => other?,
    };
    audit::record(
        tx,
        ctx.event("rule.update", "rule", Some(id))
            .with_details(json!({ "before": before, "after": rule })),
    )
    .await?;
    let reapply = rule.enabled
        && (rule.filter != before.filter
            || rule.actions != before.actions
            || rule.priority != before.priority
            || !before.enabled);
    let report = match reapply {
        true => Some(apply_rule(tx, ctx, &rule).await?),
        false => None,
    };
    Ok((rule, report))
}

/// Deletes a rule. What it set stays set; new items no longer get its defaults.
pub async fn delete(
    tx: &mut Tx,
    ctx: &ChangeContext,
    id: &str,
    expected_version: Option<i64>,
) -> StoreResult<()> {
    let before = get_in(tx, id).await?;
    check_version(expected_version, before.version)?;
    with_conn!(tx, |conn| {
        sqlx::query("DELETE FROM rules WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    audit::record(
        tx,
        ctx.event("rule.delete", "rule", Some(id))
            .with_details(json!({ "before": before })),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bulk actions

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkAction {
    pub id: String,
    pub target: RuleTarget,
    pub filter: ItemFilter,
    pub actions: SettingOverrides,
    pub reason: Option<String>,
    pub report: ApplyReport,
    /// Who ran it (`kind:id`).
    pub actor: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewBulkAction {
    pub target: RuleTarget,
    pub filter: ItemFilter,
    pub actions: SettingOverrides,
    pub reason: Option<String>,
}

/// Previews a bulk action: what it would change, nothing written.
pub async fn preview_bulk(tx: &mut Tx, new: &mut NewBulkAction) -> StoreResult<ApplyReport> {
    check_bulk(tx, new).await?;
    let ctx = ChangeContext::new(tessera_domain::audit::Actor::system());
    apply(
        tx,
        &ctx,
        new.target,
        &new.filter,
        Setting::Bulk(&new.actions),
        true,
    )
    .await
}

async fn check_bulk(tx: &mut Tx, new: &mut NewBulkAction) -> StoreResult<()> {
    rules::validate_filter(&mut new.filter)?;
    rules::validate_actions(new.target, &new.actions)?;
    tessera_domain::governance::validate_reason(new.reason.as_deref())?;
    super::check_principals(tx, "actions.owner", new.actions.owner.iter()).await?;
    super::check_principals(
        tx,
        "actions.maintainers",
        new.actions.maintainers.iter().flatten(),
    )
    .await
}

/// Applies a bulk action once and keeps its record.
pub async fn run_bulk(
    tx: &mut Tx,
    ctx: &ChangeContext,
    mut new: NewBulkAction,
) -> StoreResult<BulkAction> {
    check_bulk(tx, &mut new).await?;
    let report = apply(
        tx,
        ctx,
        new.target,
        &new.filter,
        Setting::Bulk(&new.actions),
        false,
    )
    .await?;
    let action = BulkAction {
        id: new_id(),
        target: new.target,
        filter: new.filter,
        actions: new.actions,
        reason: new.reason,
        report,
        actor: actor_ref(ctx),
        created_at: tx.now(),
    };
    let a = &action;
    with_conn!(tx, |conn| {
        sqlx::query(
            "INSERT INTO bulk_actions (id, target, filter, actions, reason, matched, changed, \
             report, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&a.id)
        .bind(a.target.as_str())
        .bind(to_json(&a.filter))
        .bind(to_json(&a.actions))
        .bind(&a.reason)
        .bind(a.report.matched as i64)
        .bind(a.report.changed as i64)
        .bind(to_json(&a.report))
        .bind(&a.actor)
        .bind(a.created_at)
        .execute(&mut *conn)
        .await?;
    });
    audit::record(
        tx,
        ctx.event("bulk_action.run", "bulk_action", Some(&action.id))
            .with_details(json!({
                "target": action.target, "filter": action.filter, "actions": action.actions,
                "matched": action.report.matched, "changed": action.report.changed,
                "reason": action.reason,
            })),
    )
    .await?;
    Ok(action)
}

#[derive(sqlx::FromRow)]
struct BulkRow {
    id: String,
    target: String,
    filter: String,
    actions: String,
    reason: Option<String>,
    report: String,
    actor: String,
    created_at: i64,
}

impl TryFrom<BulkRow> for BulkAction {
    type Error = StoreError;
    fn try_from(r: BulkRow) -> StoreResult<Self> {
        Ok(BulkAction {
            target: RuleTarget::parse(&r.target)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown target {:?}", r.target)))?,
            filter: from_json("bulk_actions.filter", &r.filter)?,
            actions: from_json("bulk_actions.actions", &r.actions)?,
            report: from_json("bulk_actions.report", &r.report)?,
            id: r.id,
            reason: r.reason,
            actor: r.actor,
            created_at: r.created_at,
        })
    }
}

const BULK_COLUMNS: &str = "id, target, filter, actions, reason, report, actor, created_at";

/// A page of bulk actions, oldest first, after the id `after`.
pub async fn list_bulk(db: &Db, after: Option<&str>, limit: i64) -> StoreResult<Vec<BulkAction>> {
    let sql = format!(
        "SELECT {BULK_COLUMNS} FROM bulk_actions WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
    );
    let rows: Vec<BulkRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit.clamp(1, MAX_PAGE))
            .fetch_all(pool)
            .await?
    });
    rows.into_iter().map(BulkAction::try_from).collect()
}

pub async fn get_bulk(db: &Db, id: &str) -> StoreResult<BulkAction> {
    let sql = format!("SELECT {BULK_COLUMNS} FROM bulk_actions WHERE id = $1");
    let row: Option<BulkRow> = with_pool!(db, |pool| {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?
    });
    row.ok_or_else(|| StoreError::not_found("bulk action", id))?
        .try_into()
}

use serde_json::{Value, json};

use super::*;
use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_TYPE, USER_TYPE};

fn user() -> Map<String, Value> {
    json!({
        "userName": "bjensen@example.com",
        "active": true,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
        "addresses": [{"type": "work", "locality": "Leeds"}]
    })
    .as_object()
    .unwrap()
    .clone()
}

fn patch(doc: &mut Map<String, Value>, ops: Value) -> Result<Vec<MemberChange>, ScimError> {
    let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
    apply_patch(&USER_TYPE, doc, &parse_patch(&body)?)
}

fn group_patch(ops: Value) -> Result<(Map<String, Value>, Vec<MemberChange>), ScimError> {
    let mut doc = json!({"displayName": "Sales"}).as_object().unwrap().clone();
    let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
    let changes = apply_patch(&GROUP_TYPE, &mut doc, &parse_patch(&body)?)?;
    Ok((doc, changes))
}

#[test]
fn entra_default_dialect_disable_with_string_false_and_capitalised_op() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    )
    .unwrap();
    assert_eq!(doc["active"], false);
    patch(
        &mut doc,
        json!([{"op": "REPLACE", "path": "active", "value": "true"}]),
    )
    .unwrap();
    assert_eq!(doc["active"], true);
}

#[test]
fn entra_one_op_per_attribute() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([
            {"op": "Replace", "path": "displayName", "value": "Babs"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "babs@example.com"},
            {"op": "Replace", "path": "name.givenName", "value": "Babs"},
            {"op": "Replace", "path": "name.familyName", "value": "J"},
            {"op": "Replace", "path": "externalId", "value": "bj"},
            {"op": "Replace", "path": format!("{ENTERPRISE_USER_SCHEMA}:employeeNumber"), "value": "701984"},
            {"op": "Add", "path": "nickName", "value": "Babs"}
        ]),
    )
    .unwrap();
    assert_eq!(doc["displayName"], "Babs");
    assert_eq!(
        doc["emails"],
        json!([{"value": "babs@example.com", "type": "work", "primary": true}])
    );
    assert_eq!(doc["name"], json!({"givenName": "Babs", "familyName": "J"}));
    assert_eq!(doc["externalId"], "bj");
    assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "701984");
    assert_eq!(doc["nickName"], "Babs");
}

#[test]
fn flagged_no_path_replace_with_dotted_and_urn_keys() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"},
            {"op": "replace", "value": {
                "displayName": "Barbara J",
                "name.givenName": "Barb",
                "name.familyName": "Jensen-Smith",
                format!("{ENTERPRISE_USER_SCHEMA}:employeeNumber"): "42"
            }}
        ]),
    )
    .unwrap();
    assert_eq!(doc["emails"][0]["value"], "new@example.com");
    assert_eq!(
        doc["name"],
        json!({"givenName": "Barb", "familyName": "Jensen-Smith"})
    );
    assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["employeeNumber"], "42");
}

#[test]
fn okta_no_path_replace_of_active_and_whole_extension() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .unwrap();
    assert_eq!(doc["active"], false);
    patch(
        &mut doc,
        json!([{"op": "add", "value": {ENTERPRISE_USER_SCHEMA: {"department": "Sales"}, "id": "ignored"}}]),
    )
    .unwrap();
    assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["department"], "Sales");
    assert!(!doc.contains_key("id"));
}

#[test]
fn filtered_add_creates_the_element_and_later_ops_update_the_same_one() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([
            {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 7700 900123"},
            {"op": "Add", "path": "addresses[type eq \"other\"].formatted", "value": "Desk 4"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].postalCode", "value": "LS1"},
            {"op": "Replace", "path": "addresses[type eq \"home\"].locality", "value": "York"},
            {"op": "Replace", "path": "addresses[type eq \"home\"].region", "value": "Yorks"}
        ]),
    )
    .unwrap();
    assert_eq!(
        doc["phoneNumbers"],
        json!([{"type": "mobile", "value": "+44 7700 900123"}])
    );
    assert_eq!(
        doc["addresses"],
        json!([
            {"type": "work", "locality": "Leeds", "streetAddress": "1 Main St", "postalCode": "LS1"},
            {"type": "other", "formatted": "Desk 4"},
            {"type": "home", "locality": "York", "region": "Yorks"}
        ])
    );
}

#[test]
fn filtered_remove_with_a_value_removes_and_never_sets() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([{"op": "Remove", "path": "emails[type eq \"work\"].value", "value": "bjensen@example.com"}]),
    )
    .unwrap();
    // Only `type` and `primary` were left: the element stays without its value.
    assert_eq!(doc["emails"], json!([{"type": "work", "primary": true}]));
    patch(
        &mut doc,
        json!([{"op": "remove", "path": "emails[type eq \"work\"]"}]),
    )
    .unwrap();
    assert!(!doc.contains_key("emails"));
}

#[test]
fn manager_in_every_form_and_cleared_by_empty_value() {
    let mut doc = user();
    let urn_path = format!("{ENTERPRISE_USER_SCHEMA}:manager");
    patch(
        &mut doc,
        json!([{"op": "Add", "path": urn_path, "value": "m1"}]),
    )
    .unwrap();
    assert_eq!(
        doc[ENTERPRISE_USER_SCHEMA]["manager"],
        json!({"value": "m1"})
    );
    patch(
        &mut doc,
        json!([{"op": "Replace", "path": urn_path, "value": [{"$ref": "../Users/m2", "value": "m2"}]}]),
    )
    .unwrap();
    assert_eq!(
        doc[ENTERPRISE_USER_SCHEMA]["manager"],
        json!({"$ref": "../Users/m2", "value": "m2"})
    );
    patch(
        &mut doc,
        json!([{"op": "Replace", "path": urn_path, "value": ""}]),
    )
    .unwrap();
    assert!(!doc.contains_key(ENTERPRISE_USER_SCHEMA));
    patch(
        &mut doc,
        json!([{"op": "Add", "path": "manager", "value": "m3"}]),
    )
    .unwrap_err();
}

#[test]
fn roles_as_json_strings_are_kept() {
    let mut doc = user();
    let role = r#"{"id":"r1","displayName":"Admin"}"#;
    patch(
        &mut doc,
        json!([{"op": "Add", "path": "roles", "value": [{"value": role}]}]),
    )
    .unwrap();
    assert_eq!(doc["roles"], json!([{"value": role}]));
}

#[test]
fn null_and_empty_string_clear() {
    let mut doc = user();
    doc.insert("title".into(), json!("Boss"));
    patch(
        &mut doc,
        json!([{"op": "replace", "path": "title", "value": ""}]),
    )
    .unwrap();
    assert!(!doc.contains_key("title"));
    patch(
        &mut doc,
        json!([{"op": "replace", "path": "name.givenName", "value": null}]),
    )
    .unwrap();
    assert_eq!(doc["name"], json!({"familyName": "Jensen"}));
}

#[test]
fn adding_a_primary_value_demotes_the_old_one() {
    let mut doc = user();
    patch(
        &mut doc,
        json!([{"op": "add", "path": "emails", "value": [{"value": "b@home", "type": "home", "primary": true}]}]),
    )
    .unwrap();
    let emails = doc["emails"].as_array().unwrap();
    assert_eq!(emails.len(), 2);
    assert_eq!(emails.iter().filter(|e| e["primary"] == true).count(), 1);
}

#[test]
fn group_member_forms() {
    let (_, changes) = group_patch(json!([
        {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}, {"value": "u2"}]},
        {"op": "Remove", "path": "members", "value": [{"value": "u1"}]},
        {"op": "remove", "path": "members[value eq \"u2\"]"},
        {"op": "replace", "path": "members", "value": [{"value": "u3"}]},
        {"op": "remove", "path": "members"}
    ]))
    .unwrap();
    assert_eq!(
        changes,
        vec![
            MemberChange::Add(vec!["u1".into(), "u2".into()]),
            MemberChange::Remove(vec!["u1".into()]),
            MemberChange::Remove(vec!["u2".into()]),
            MemberChange::Replace(vec!["u3".into()]),
            MemberChange::Replace(vec![]),
        ]
    );
}

#[test]
fn okta_group_rename_with_id_and_members_in_value() {
    let (doc, changes) = group_patch(json!([
        {"op": "replace", "value": {"id": "g1", "displayName": "Sales EMEA"}},
        {"op": "add", "value": {"members": [{"value": "u9"}]}}
    ]))
    .unwrap();
    assert_eq!(doc["displayName"], "Sales EMEA");
    assert_eq!(changes, vec![MemberChange::Add(vec!["u9".into()])]);
}

#[test]
fn bad_patches_say_what_is_wrong() {
    let mut doc = user();
    let kind = |r: Result<Vec<MemberChange>, ScimError>| r.expect_err("must fail").scim_type;
    assert_eq!(
        kind(patch(&mut doc, json!([{"op": "remove"}]))),
        Some(ScimType::NoTarget)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "add", "path": "shoeSize", "value": 1}])
        )),
        Some(ScimType::InvalidPath)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "add", "path": "emails[type eq", "value": 1}])
        )),
        Some(ScimType::InvalidPath)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "replace", "path": "id", "value": "x"}])
        )),
        Some(ScimType::Mutability)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "replace", "path": "groups", "value": []}])
        )),
        Some(ScimType::Mutability)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "remove", "path": "userName"}])
        )),
        Some(ScimType::Mutability)
    );
    assert_eq!(
        kind(patch(&mut doc, json!([{"op": "copy", "path": "title"}]))),
        Some(ScimType::InvalidSyntax)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "replace", "path": "active", "value": "maybe"}])
        )),
        Some(ScimType::InvalidValue)
    );
    assert_eq!(
        kind(patch(
            &mut doc,
            json!([{"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "home"}])
        )),
        Some(ScimType::NoTarget)
    );
    assert_eq!(
        doc,
        user(),
        "failed patches change nothing the caller keeps"
    );
}

//! Groups → roles end to end: an IdP provisions groups and users over SCIM in Entra's forms,
//! `/api/v1/group-mappings` maps the groups, and the platform roles and application memberships
//! follow every SCIM membership and status change, on SQLite and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::governance::{Api, servers};
use super::scim::{GROUP, Scim};

/// The memberships an identity holds through group mappings, as `(role_id, status)`.
async fn mapped_memberships(api: &Api<'_>, identity: &str) -> Vec<(String, String)> {
    let r = api
        .get(&format!(
            "/api/v1/memberships?identity_id={identity}&source=group_mapping"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut out: Vec<(String, String)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role_id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn platform_role(api: &Api<'_>, identity: &str) -> (String, Value) {
    let r = api.get(&format!("/api/v1/identities/{identity}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (
        r.body["platform_role"].as_str().unwrap().to_owned(),
        r.body["platform_role_mapping_id"].clone(),
    )
}

#[tokio::test]
async fn scim_changes_drive_platform_roles_and_mapped_memberships() {
    for server in servers().await {
        let api = Api::new(&server);
        let scim = Scim::new(&server, "Contoso Entra").await;
        let sources = api.get("/api/v1/data-sources").await.body;
        let source_id = sources["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "Contoso Entra")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            api.get(&format!("/api/v1/data-sources/{source_id}"))
                .await
                .body["platform_role_precedence"],
            "priority"
        );

        let app = api
            .create(
                "/api/v1/applications",
                json!({"name": "Jira", "connector_kind": "manual"}),
            )
            .await;
        let res = api
            .create(
                &format!(
                    "/api/v1/applications/{}/resources",
                    app["id"].as_str().unwrap()
                ),
                json!({"name": "site", "resource_type": "site"}),
            )
            .await;
        let role = api
            .create(
                &format!("/api/v1/resources/{}/roles", res["id"].as_str().unwrap()),
                json!({"name": "editor"}),
            )
            .await;
        let role_id = role["id"].as_str().unwrap().to_owned();

        let ada = scim.create_user("ada@contoso.example").await;
        let bob = scim.create_user("bob@contoso.example").await;
        let mut groups = Vec::new();
        for name in ["Tessera Admins", "Jira Editors"] {
            let r = scim
                .post("/Groups", json!({"schemas": [GROUP], "displayName": name}))
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            groups.push(r.body["id"].as_str().unwrap().to_owned());
        }
        let (admins, editors) = (&groups[0], &groups[1]);

        // Bad mappings are refused with the field named; nothing is created.
        for (body, field) in [
            (json!({"group_id": editors}), "platform_role"),
            (json!({"group_id": editors, "platform_role": "root"}), ""),
            (
                json!({"group_id": editors, "platform_role": "admin", "priority": -1}),
                "priority",
            ),
            (
                json!({"group_id": ada, "platform_role": "admin"}),
                "group_id",
            ),
            (json!({"group_id": editors, "role_ids": [ada]}), "role_ids"),
        ] {
            let r = api.post("/api/v1/group-mappings", body.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            if !field.is_empty() {
                assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
            }
        }
        let admin_map = api
            .create(
                "/api/v1/group-mappings",
                json!({"group_id": admins, "platform_role": "admin", "priority": 1}),
            )
            .await;
        let editor_map = api
            .create(
                "/api/v1/group-mappings",
                json!({"group_id": editors, "platform_role": "approver", "priority": 10,
                       "role_ids": [role_id]}),
            )
            .await;
        assert_eq!(editor_map["data_source_id"], source_id.as_str());
        let twice = api
            .post(
                "/api/v1/group-mappings",
                json!({"group_id": editors, "platform_role": "auditor"}),
            )
            .await;
        assert_eq!(twice.status, StatusCode::CONFLICT);

        // Entra adds ada to the editors group: she is an approver holding the editor role.
        let r = scim
            .patch(
                &format!("/Groups/{editors}"),
                json!([{"op": "Add", "path": "members", "value": [{"value": ada}]}]),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        assert_eq!(
            platform_role(&api, &ada).await,
            ("approver".into(), editor_map["id"].clone())
        );
        assert_eq!(
            mapped_memberships(&api, &ada).await,
            vec![(role_id.clone(), "active".into())]
        );
        // Bob is in no mapped group: the data source's default, which can be changed.
        assert_eq!(
            platform_role(&api, &bob).await,
            ("requester".into(), Value::Null)
        );
        let r = api
            .patch(
                &format!("/api/v1/data-sources/{source_id}"),
                json!({"default_platform_role": "auditor"}),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(platform_role(&api, &bob).await.0, "auditor");

        // Adding ada to the admins group: priority 1 beats 10.
        scim.patch(
            &format!("/Groups/{admins}"),
            json!([{"op": "Add", "path": "members", "value": [{"value": ada}]}]),
        )
        .await;
        assert_eq!(
            platform_role(&api, &ada).await,
            ("admin".into(), admin_map["id"].clone())
        );
        // Under "most recent group wins", admins (joined last) still wins.
        let r = api
            .patch(
                &format!("/api/v1/data-sources/{source_id}"),
                json!({"platform_role_precedence": "most_recent"}),
                None,
            )
            .await;
        assert_eq!(r.body["platform_role_precedence"], "most_recent");
        assert_eq!(platform_role(&api, &ada).await.0, "admin");
        // Okta's replace of the editors' members (ada stays) is no new joining: admins stays
        // the group ada joined last.
        let r = scim
            .patch(
                &format!("/Groups/{editors}"),
                json!([{"op": "replace", "path": "members", "value": [{"value": ada}]}]),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        assert_eq!(platform_role(&api, &ada).await.0, "admin");
        // Evaluated afresh (the precedence switched away and back), still admins.
        for precedence in ["priority", "most_recent"] {
            let r = api
                .patch(
                    &format!("/api/v1/data-sources/{source_id}"),
                    json!({"platform_role_precedence": precedence}),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        assert_eq!(platform_role(&api, &ada).await.0, "admin");

        // The mapped membership is not the API's to revoke.
        let held = api
            .get(&format!(
                "/api/v1/memberships?identity_id={ada}&source=group_mapping"
            ))
            .await;
        let membership = held.body["items"][0]["id"].as_str().unwrap().to_owned();
        let r = api
            .delete(&format!("/api/v1/memberships/{membership}"))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(
            r.problem_type(),
            "urn:tessera:problem:membership-managed-elsewhere"
        );

        // Entra soft-deletes ada: the membership ends; restoring her gives it back.
        for (value, expected) in [
            ("False", vec![(role_id.clone(), "revoked".to_string())]),
            (
                "True",
                vec![
                    (role_id.clone(), "active".to_string()),
                    (role_id.clone(), "revoked".to_string()),
                ],
            ),
        ] {
            let r = scim
                .patch(
                    &format!("/Users/{ada}"),
                    json!([{"op": "Replace", "path": "active", "value": value}]),
                )
                .await;
            assert!(r.status.is_success(), "{}", r.body);
            assert_eq!(mapped_memberships(&api, &ada).await, expected);
        }

        // Entra removes her from the editors group (its filter form): the role ends.
        scim.patch(
            &format!("/Groups/{editors}"),
            json!([{"op": "Remove", "path": format!("members[value eq \"{ada}\"]")}]),
        )
        .await;
        assert!(
            mapped_memberships(&api, &ada)
                .await
                .iter()
                .all(|(_, status)| status == "revoked")
        );

        // Deleting the admins group deletes its mapping and its effect.
        let r = scim.delete(&format!("/Groups/{admins}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let gone = api
            .get(&format!(
                "/api/v1/group-mappings/{}",
                admin_map["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(
            platform_role(&api, &ada).await,
            ("auditor".into(), Value::Null)
        );

        // The remaining mapping: listed, filtered, changed with If-Match, deleted.
        let list = api
            .get(&format!("/api/v1/group-mappings?role_id={role_id}"))
            .await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
        let path = format!(
            "/api/v1/group-mappings/{}",
            editor_map["id"].as_str().unwrap()
        );
        let current = api.get(&path).await;
        let changed = api
            .patch(&path, json!({"platform_role": null}), Some(&current.etag()))
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert_eq!(changed.body["platform_role"], Value::Null);
        let stale = api
            .patch(&path, json!({"priority": 3}), Some(&current.etag()))
            .await;
        assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
        // A mapping must still give something.
        let empty = api.patch(&path, json!({"role_ids": []}), None).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);
        assert_eq!(api.delete(&path).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.get(&path).await.status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

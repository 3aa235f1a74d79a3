//! `/api/v1/rules` and `/api/v1/bulk-actions` over HTTP: bad filters and settings refused with
//! the field named, rules applied at once and to new items, previews that change nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::governance::{Api, servers};

#[tokio::test]
async fn rules_and_bulk_actions_over_the_api() {
    for server in servers().await {
        let api = Api::new(&server);
        let app = api
            .create(
                "/api/v1/applications",
                json!({"name": "Postgres fleet", "connector_kind": "manual"}),
            )
            .await;
        let resources = format!(
            "/api/v1/applications/{}/resources",
            app["id"].as_str().unwrap()
        );
        let mut ids = Vec::new();
        for (name, tags) in [
            ("prod-orders", json!(["prod"])),
            ("dev-orders", json!(["dev"])),
        ] {
            let r = api
                .create(
                    &resources,
                    json!({"name": name, "resource_type": "database", "tags": tags}),
                )
                .await;
            ids.push(r["id"].as_str().unwrap().to_owned());
        }

        for (body, field) in [
            (
                json!({"name": "x", "target": "resources", "filter": {"tag": ["prod"]},
                    "actions": {"requestable": false}}),
                None,
            ),
            (
                json!({"name": "x", "target": "resources", "actions": {}}),
                Some("actions"),
            ),
            (
                json!({"name": "x", "target": "roles",
                    "actions": {"owner": {"kind": "group", "id": ids[0]}}}),
                Some("actions.owner"),
            ),
            (
                json!({"name": "x", "target": "resources", "filter": {"resource_type": "Bad Type"},
                    "actions": {"requestable": false}}),
                Some("filter.resource_type"),
            ),
        ] {
            let r = api.post("/api/v1/rules", body.clone()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
            if let Some(field) = field {
                assert_eq!(r.body["errors"][0]["field"], field, "{}", r.body);
            }
        }
        assert!(
            api.get("/api/v1/rules").await.body["items"]
                .as_array()
                .unwrap()
                .is_empty()
        );

        let rule = api
            .create(
                "/api/v1/rules",
                json!({"name": "prod is not requestable", "target": "resources",
                       "filter": {"tags": ["PROD"], "name_pattern": "*-orders"},
                       "actions": {"requestable": false}, "priority": 5}),
            )
            .await;
        assert_eq!(rule["applied"]["matched"], 1);
        assert_eq!(rule["applied"]["changed"], 1);
        assert_eq!(rule["applied"]["items"][0]["id"], ids[0].as_str());
        let prod = api.get(&format!("/api/v1/resources/{}", ids[0])).await;
        assert_eq!(
            prod.body["overrides"]["requestable"], false,
            "{}",
            prod.body
        );
        // A new matching resource gets the rule's setting as its default.
        let fresh = api
            .create(
                &resources,
                json!({"name": "prod-2-orders", "resource_type": "database", "tags": ["prod"]}),
            )
            .await;
        assert_eq!(fresh["overrides"]["requestable"], false);
        // Disabled, it gives new items nothing.
        let path = format!("/api/v1/rules/{}", rule["id"].as_str().unwrap());
        let r = api.patch(&path, json!({"enabled": false}), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body.get("applied").is_none());
        let later = api
            .create(
                &resources,
                json!({"name": "prod-3-orders", "resource_type": "database", "tags": ["prod"]}),
            )
            .await;
        assert_eq!(later["overrides"]["requestable"], Value::Null);

        // Bulk: preview, apply, read back.
        let bulk = json!({"target": "resources", "filter": {"resource_type": "database"},
                          "actions": {"durations": {"max_seconds": 86400}}, "reason": "CHG-7"});
        let preview = api
            .post("/api/v1/bulk-actions?dry_run=true", bulk.clone())
            .await;
        assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
        assert_eq!(preview.body["changed"], 4);
        let dev = api.get(&format!("/api/v1/resources/{}", ids[1])).await;
        assert_eq!(dev.body["overrides"]["durations"], Value::Null);
        let run = api.post("/api/v1/bulk-actions", bulk.clone()).await;
        assert_eq!(run.status, StatusCode::CREATED, "{}", run.body);
        assert_eq!(run.body["report"]["changed"], 4);
        let dev = api.get(&format!("/api/v1/resources/{}", ids[1])).await;
        assert_eq!(dev.body["overrides"]["durations"]["max_seconds"], 86400);
        let kept = api
            .get(&format!(
                "/api/v1/bulk-actions/{}",
                run.body["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(kept.body["reason"], "CHG-7");
        assert_eq!(api.delete(&path).await.status, StatusCode::NO_CONTENT);
        server.stop().await;
    }
}

//! `/scim/v2` over real HTTP: the Entra ID and Okta request forms (each followed by a read of the
//! stored state), bad input, isolation between data sources, concurrency and ETags, on SQLite
//! and PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, MatchingKey};
use tessera_server::ServerConfig;
use tessera_store::{ChangeContext, directory, scim_tokens};
use tessera_testkit::{TestDb, TestServer};

pub(super) const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(super) const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A SCIM client of one data source.
pub(super) struct Scim {
    base: String,
    token: String,
    http: reqwest::Client,
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    headers: reqwest::header::HeaderMap,
    pub(super) body: Value,
}

impl Reply {
    fn scim_type(&self) -> &str {
        self.body["scimType"].as_str().unwrap_or("")
    }
}

async fn data_source_token(server: &TestServer, name: &str) -> String {
    let db = &server.test_db.db;
    let ctx = ChangeContext::new(Actor::cli());
    let mut tx = db.begin().await.unwrap();
    let source = directory::create_data_source(
        &mut tx,
        &ctx,
        name,
        DataSourceKind::Scim,
        MatchingKey::UserName,
    )
    .await
    .unwrap();
    let (_, token) = scim_tokens::create(&mut tx, &ctx, &source.id, "test")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    token
}

impl Scim {
    pub(super) async fn new(server: &TestServer, name: &str) -> Scim {
        Scim {
            base: server.url("/scim/v2"),
            token: data_source_token(server, name).await,
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        if !text.is_empty() {
            assert_eq!(
                headers["content-type"], "application/scim+json",
                "every SCIM body is application/scim+json ({path})"
            );
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(super) async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }
    pub(super) async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body), &[])
            .await
    }
    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body), &[]).await
    }
    pub(super) async fn patch(&self, path: &str, ops: Value) -> Reply {
        let body = json!({"schemas": [PATCH_OP], "Operations": ops});
        self.send(reqwest::Method::PATCH, path, Some(body), &[])
            .await
    }
    pub(super) async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None, &[]).await
    }

    pub(super) async fn create_user(&self, user_name: &str) -> String {
        let r = self
            .post("/Users", json!({"schemas": [USER], "userName": user_name}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// The ids a filter finds.
    async fn find(&self, endpoint: &str, query: &str) -> Vec<String> {
        let r = self.get(&format!("{endpoint}?{query}")).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.body);
        assert_eq!(
            r.body["totalResults"].as_i64().unwrap() as usize,
            r.body["Resources"].as_array().unwrap().len()
        );
        r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn servers() -> Vec<TestServer> {
    let mut out = Vec::new();
    for t in TestDb::all().await {
        out.push(TestServer::start(t, ServerConfig::default()).await);
    }
    out
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn entra_default_dialect() {
    for server in servers().await {
        let scim = Scim::new(&server, "Entra").await;
        // Test Connection: a random GUID matches nothing, with 200.
        assert!(
            scim.find(
                "/Users",
                "filter=userName+eq+%2205d4f0a1-5d3b-4b6e-9c5a-4f0f5f6e2b1c%22"
            )
            .await
            .is_empty()
        );
        // Create with explicit nulls, read-only meta, the enterprise extension and "True".
        let r = scim
            .post(
                "/Users?aadOptscim062020",
                json!({
                    "schemas": [USER, ENTERPRISE],
                    "externalId": "jyoung", "userName": "Jo.Young@contoso.example", "active": "True",
                    "emails": [{"primary": true, "type": "work", "value": "jo.young@contoso.example"}],
                    "meta": {"resourceType": "User"},
                    "name": {"formatted": "Jo Young", "familyName": "Young", "givenName": "Jo"},
                    "roles": [], "addresses": null, "phoneNumbers": null, "title": null,
                    ENTERPRISE: {"department": null, "employeeNumber": "1001"}
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        assert!(
            r.headers["location"]
                .to_str()
                .unwrap()
                .ends_with(&format!("/scim/v2/Users/{id}"))
        );
        let manager = scim.create_user("boss@contoso.example").await;

        // The matching filters Entra sends, including the unquoted value and `+` for spaces.
        for query in [
            "filter=userName+eq+%22jo.young@CONTOSO.example%22",
            "filter=externalId+eq+jyoung",
            "filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22Jo.Young@contoso.example%22",
            &format!("filter=id+eq+%22{id}%22+and+name.givenName+eq+%22jo%22"),
        ] {
            assert_eq!(
                scim.find("/Users", query).await,
                vec![id.clone()],
                "{query}"
            );
        }

        let path = format!("/Users/{id}");
        let r = scim
            .patch(
                &path,
                json!([
                    {"op": "Replace", "path": "displayName", "value": "Jo Y"},
                    {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "jy@contoso.example"},
                    {"op": "Replace", "path": "name.familyName", "value": "Young-Smith"},
                    {"op": "Replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "1002"},
                    {"op": "Add", "path": "nickName", "value": "Jo"},
                    {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+44 7700 900001"},
                    {"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Way"},
                    {"op": "Add", "path": "addresses[type eq \"work\"].locality", "value": "Leeds"},
                    {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": manager},
                    {"op": "Add", "path": "roles", "value": [{"value": "{\"id\":\"r1\"}"}]}
                ]),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let user = scim.get(&path).await.body;
        assert_eq!(user["displayName"], "Jo Y");
        assert_eq!(
            user["emails"],
            json!([{"primary": true, "type": "work", "value": "jy@contoso.example"}])
        );
        assert_eq!(user["name"]["familyName"], "Young-Smith");
        assert_eq!(user[ENTERPRISE]["employeeNumber"], "1002");
        assert_eq!(user[ENTERPRISE]["manager"]["value"], manager.as_str());
        assert_eq!(
            user["phoneNumbers"],
            json!([{"type": "mobile", "value": "+44 7700 900001"}])
        );
        assert_eq!(
            user["addresses"],
            json!([{"type": "work", "streetAddress": "1 Way", "locality": "Leeds"}])
        );
        assert_eq!(user["roles"][0]["value"], "{\"id\":\"r1\"}");
        // The e-mail index follows the change.
        assert_eq!(
            scim.find(
                "/Users",
                "filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22jy@contoso.example%22"
            )
            .await,
            vec![id.clone()]
        );
        // Manager pre-check filter.
        let q = format!(
            "filter=id+eq+%22{id}%22+and+{}:manager+eq+%22{manager}%22",
            ENTERPRISE
        );
        assert_eq!(scim.find("/Users", &q).await, vec![id.clone()]);

        // Remove with a value removes; manager replaced with an empty value is cleared.
        scim.patch(&path, json!([
            {"op": "Remove", "path": "emails[type eq \"work\"].value", "value": "jy@contoso.example"},
            {"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": ""}
        ])).await;
        let user = scim.get(&path).await.body;
        assert_eq!(user["emails"], json!([{"primary": true, "type": "work"}]));
        assert!(user[ENTERPRISE].get("manager").is_none());

        // Disable with "False": still returned by GET and by filters; then restore.
        let r = scim
            .patch(
                &path,
                json!([{"op": "Replace", "path": "active", "value": "False"}]),
            )
            .await;
        assert_eq!(r.body["active"], false);
        assert_eq!(scim.get(&path).await.body["active"], false);
        assert_eq!(
            scim.find("/Users", "filter=externalId+eq+%22jyoung%22")
                .await,
            vec![id.clone()]
        );
        assert_eq!(
            scim.find("/Users", "filter=active+eq+false").await,
            vec![id.clone()]
        );
        scim.patch(
            &path,
            json!([{"op": "Replace", "path": "active", "value": "True"}]),
        )
        .await;
        assert_eq!(scim.get(&path).await.body["active"], true);

        // Groups: the extra Microsoft schema URI, no members; read with excludedAttributes.
        let r = scim
            .post("/Groups", json!({"schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                "externalId": "7f4b", "displayName": "Sales", "meta": {"resourceType": "Group"}}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let gid = r.body["id"].as_str().unwrap().to_owned();
        let gpath = format!("/Groups/{gid}");
        assert_eq!(
            scim.find(
                "/Groups",
                "excludedAttributes=members&filter=displayName+eq+%22sales%22"
            )
            .await,
            vec![gid.clone()]
        );
        let r = scim.patch(&gpath, json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}, {"$ref": null, "value": manager}]}])).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let mut both = vec![id.clone(), manager.clone()];
        both.sort();
        assert_eq!(member_ids(&scim.get(&gpath).await.body), both);
        let r = scim
            .get(&format!("{gpath}?excludedAttributes=members"))
            .await
            .body;
        assert!(r.get("members").is_none());
        assert_eq!(
            scim.find("/Groups", &format!("filter=members.value+eq+%22{id}%22"))
                .await,
            vec![gid.clone()]
        );
        // The user lists the group.
        assert_eq!(
            scim.get(&path).await.body["groups"][0]["value"],
            gid.as_str()
        );
        // Remove a member: default dialect (path members + value array).
        scim.patch(
            &gpath,
            json!([{"op": "Remove", "path": "members", "value": [{"value": manager}]}]),
        )
        .await;
        assert_eq!(member_ids(&scim.get(&gpath).await.body), vec![id.clone()]);

        // Hard delete: 204, then 404, and the group no longer lists the user.
        assert_eq!(scim.delete(&path).await.status, StatusCode::NO_CONTENT);
        let r = scim.get(&path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.body["status"], "404");
        assert!(member_ids(&scim.get(&gpath).await.body).is_empty());
        assert_eq!(scim.delete(&path).await.status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

#[tokio::test]
async fn entra_flagged_dialect() {
    for server in servers().await {
        let scim = Scim::new(&server, "Entra").await;
        let id = scim.create_user("ann@contoso.example").await;
        let other = scim.create_user("ben@contoso.example").await;
        let path = format!("/Users/{id}");
        let r = scim
            .patch(&path, json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "ann@contoso.example"},
                {"op": "replace", "value": {"displayName": "Ann", "name.givenName": "Ann", "name.familyName": "Lee",
                    format!("{ENTERPRISE}:employeeNumber"): "7"}},
                {"op": "replace", "path": "active", "value": false}
            ]))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let user = scim.get(&path).await.body;
        assert_eq!(
            user["name"],
            json!({"givenName": "Ann", "familyName": "Lee"})
        );
        assert_eq!(user["displayName"], "Ann");
        assert_eq!(user[ENTERPRISE]["employeeNumber"], "7");
        assert_eq!(
            user["emails"],
            json!([{"type": "work", "value": "ann@contoso.example"}])
        );
        assert_eq!(user["active"], false);

        let gid = scim
            .post("/Groups", json!({"schemas": [GROUP], "displayName": "Ops"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let gpath = format!("/Groups/{gid}");
        scim.patch(
            &gpath,
            json!([{"op": "add", "path": "members", "value": [{"value": id}, {"value": other}]}]),
        )
        .await;
        let r = scim
            .patch(
                &gpath,
                json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(
            member_ids(&scim.get(&gpath).await.body),
            vec![other.clone()]
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn okta_forms() {
    for server in servers().await {
        let scim = Scim::new(&server, "Okta").await;
        let body = json!({"schemas": [USER], "userName": "sam@example.com", "name": {"givenName": "Sam", "familyName": "Ng"},
            "emails": [{"primary": true, "value": "sam@example.com", "type": "work"}], "displayName": "Sam Ng",
            "locale": "en-US", "externalId": "00u1", "groups": [], "password": "t1meMa$heen", "active": true});
        let r = scim.post("/Users", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(
            r.body.get("password").is_none(),
            "passwords are never returned"
        );
        let id = r.body["id"].as_str().unwrap().to_owned();
        // Duplicate userName (any case): 409 uniqueness.
        let mut dup = body.clone();
        dup["userName"] = json!("SAM@example.com");
        let r = scim.post("/Users", dup).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(r.scim_type(), "uniqueness");
        // Import pages: integer counters, stable order.
        for i in 0..4 {
            scim.create_user(&format!("import{i}@example.com")).await;
        }
        let page1 = scim.get("/Users?startIndex=1&count=2").await.body;
        let page2 = scim.get("/Users?startIndex=3&count=2").await.body;
        let page3 = scim.get("/Users?startIndex=5&count=2").await.body;
        assert_eq!(page1["totalResults"], 5);
        assert_eq!(
            (
                page1["itemsPerPage"].as_i64(),
                page3["itemsPerPage"].as_i64()
            ),
            (Some(2), Some(1))
        );
        assert_eq!(page2["startIndex"], 3);
        let mut seen: Vec<String> = [&page1, &page2, &page3]
            .iter()
            .flat_map(|p| {
                p["Resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["id"].as_str().unwrap().to_owned())
            })
            .collect();
        seen.dedup();
        assert_eq!(seen.len(), 5);
        // Past the end, and no page at all: the total is still counted.
        let past = scim.get("/Users?startIndex=9&count=2").await.body;
        let none = scim.get("/Users?count=0").await.body;
        assert_eq!(
            (&past["totalResults"], &none["totalResults"]),
            (&json!(5), &json!(5))
        );
        assert_eq!(past["Resources"], json!([]), "{past}");
        let sorted = scim
            .get("/Users?sortBy=userName&sortOrder=descending&count=1")
            .await
            .body;
        assert_eq!(sorted["Resources"][0]["userName"], "sam@example.com");
        // Profile update with PUT; deactivation with a path-less PATCH.
        let mut put = body.clone();
        put["name"]["familyName"] = json!("Ngata");
        put.as_object_mut().unwrap().remove("password");
        let r = scim.put(&format!("/Users/{id}"), put).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["name"]["familyName"], "Ngata");
        let r = scim
            .patch(
                &format!("/Users/{id}"),
                json!([{"op": "replace", "value": {"active": false}}]),
            )
            .await;
        assert_eq!(r.body["active"], false);
        assert_eq!(
            scim.get(&format!("/Users/{id}")).await.body["active"],
            false
        );

        // Group Push: create with members:[], rename with id+displayName, add, remove, replace, delete.
        let r = scim
            .post(
                "/Groups",
                json!({"schemas": [GROUP], "displayName": "Eng", "members": []}),
            )
            .await;
        let gid = r.body["id"].as_str().unwrap().to_owned();
        let gpath = format!("/Groups/{gid}");
        let others: Vec<String> = scim.find("/Users", "filter=userName+sw+%22import%22").await;
        assert_eq!(others.len(), 4);
        let r = scim
            .patch(&gpath, json!([
                {"op": "replace", "value": {"id": gid, "displayName": "Engineering"}},
                {"op": "add", "path": "members", "value": [{"value": id, "display": "Sam"}, {"value": others[0]}]}
            ]))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let group = scim.get(&gpath).await.body;
        assert_eq!(group["displayName"], "Engineering");
        assert_eq!(member_ids(&group).len(), 2);
        scim.patch(
            &gpath,
            json!([{"op": "remove", "path": format!("members[value eq \"{id}\"]")}]),
        )
        .await;
        assert_eq!(
            member_ids(&scim.get(&gpath).await.body),
            vec![others[0].clone()]
        );
        scim.patch(&gpath, json!([{"op": "replace", "path": "members", "value": [{"value": others[1]}, {"value": others[2]}]}])).await;
        let mut want = vec![others[1].clone(), others[2].clone()];
        want.sort();
        assert_eq!(member_ids(&scim.get(&gpath).await.body), want);
        assert_eq!(scim.delete(&gpath).await.status, StatusCode::NO_CONTENT);
        assert_eq!(scim.get(&gpath).await.status, StatusCode::NOT_FOUND);
        server.stop().await;
    }
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    for server in servers().await {
        let scim = Scim::new(&server, "Entra").await;
        let id = scim.create_user("kim@example.com").await;
        let path = format!("/Users/{id}");
        let before = scim.get(&path).await.body;
        let deep = format!("{}userName pr{}", "(".repeat(20), ")".repeat(20));
        let long = format!("userName eq \"{}\"", "x".repeat(5000));
        let cases: Vec<(Reply, u16, &str)> = vec![
            (scim.send(reqwest::Method::POST, "/Users", None, &[]).await, 400, "invalidSyntax"),
            (scim.post("/Users", json!({"schemas": [USER], "userName": "x", "urn:example:custom:2.0:User": {"a": 1}})).await, 400, "invalidValue"),
            (scim.put(&path, json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Nope"], "userName": "kim@example.com"})).await, 400, "invalidValue"),
            (scim.get("/Users?filter=userName+eq").await, 400, "invalidFilter"),
            (scim.get("/Users?filter=shoeSize+gt+9").await, 400, "invalidFilter"),
            (scim.get(&format!("/Users?filter={}", urlencode(&deep))).await, 400, "invalidFilter"),
            (scim.get(&format!("/Users?filter={}", urlencode(&long))).await, 400, "invalidFilter"),
            (scim.patch(&path, json!([{"op": "add", "path": "emails[type eq", "value": "x"}])).await, 400, "invalidPath"),
            (scim.patch(&path, json!([{"op": "replace", "path": "shoeSize", "value": 9}])).await, 400, "invalidPath"),
            (scim.patch(&path, json!([{"op": "remove"}])).await, 400, "noTarget"),
            (scim.patch(&path, json!([{"op": "replace", "path": "emails[value co \"zz\"].type", "value": "home"}])).await, 400, "noTarget"),
            (scim.patch(&path, json!([{"op": "replace", "path": "id", "value": "mine"}])).await, 400, "mutability"),
            (scim.patch(&path, json!([{"op": "replace", "path": "title", "value": "t"}, {"op": "remove", "path": "userName"}])).await, 400, "mutability"),
            (scim.post("/Users", json!({"schemas": [USER], "userName": "big", "title": "x".repeat(2 * 1024 * 1024)})).await, 413, ""),
            (scim.post("/Bulk", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": vec![json!({"method": "DELETE", "path": "/Users/x"}); 1001]})).await, 413, "tooMany"),
            (scim.send(reqwest::Method::PUT, &path, Some(json!({"schemas": [USER], "userName": "kim2@example.com"})), &[("if-match", "W/\"999\"")]).await, 412, ""),
            (scim.send(reqwest::Method::DELETE, &path, None, &[("if-match", "W/\"999\"")]).await, 412, ""),
        ];
        for (i, (reply, status, scim_type)) in cases.iter().enumerate() {
            // Panic messages go to the captured log in this binary; say which case failed.
            if reply.status.as_u16() != *status || reply.scim_type() != *scim_type {
                eprintln!("bad-input case {i}: {} {}", reply.status, reply.body);
            }
            assert_eq!(reply.status.as_u16(), *status, "case {i}: {}", reply.body);
            assert_eq!(reply.body["status"], status.to_string(), "case {i}");
            assert_eq!(reply.scim_type(), *scim_type, "case {i}: {}", reply.body);
            assert!(
                reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "case {i}"
            );
        }
        assert_eq!(scim.get(&path).await.body, before, "nothing changed");
        assert_eq!(
            scim.find("/Users", "").await,
            vec![id.clone()],
            "nothing was created"
        );
        server.stop().await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn tokens_are_required_and_data_sources_are_isolated() {
    for server in servers().await {
        let a = Scim::new(&server, "Entra").await;
        let b = Scim::new(&server, "Okta").await;
        let id = a.create_user("pat@example.com").await;
        let path = format!("/Users/{id}");
        // The same userName is free in another data source.
        let b_id = b.create_user("pat@example.com").await;
        assert_ne!(id, b_id);
        assert_eq!(b.get(&path).await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            b.patch(
                &path,
                json!([{"op": "replace", "path": "title", "value": "x"}])
            )
            .await
            .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(b.delete(&path).await.status, StatusCode::NOT_FOUND);
        assert_eq!(b.find("/Users", "").await, vec![b_id.clone()]);
        assert_eq!(
            a.find("/Users", "filter=userName+eq+%22pat@example.com%22")
                .await,
            vec![id.clone()]
        );
        // Another source's user cannot be made a member.
        let gid = a
            .post("/Groups", json!({"schemas": [GROUP], "displayName": "G"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = a
            .patch(
                &format!("/Groups/{gid}"),
                json!([{"op": "add", "path": "members", "value": [{"value": b_id}]}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(a.get(&path).await.body.get("title").is_none());

        // No token, a wrong token, an admin token: 401 with a SCIM error and a Bearer challenge.
        for token in [
            None,
            Some("tsr_scim_wrong"),
            Some(server.admin_token.as_str()),
        ] {
            let mut request = reqwest::Client::new().get(server.url("/scim/v2/Users"));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(
                r.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                body["schemas"][0],
                "urn:ietf:params:scim:api:messages:2.0:Error"
            );
        }
        // /Me is not supported.
        assert_eq!(a.get("/Me").await.status, StatusCode::NOT_IMPLEMENTED);
        server.stop().await;
    }
}

#[tokio::test]
async fn etags_bulk_and_search() {
    for server in servers().await {
        let scim = Scim::new(&server, "Entra").await;
        let id = scim.create_user("lee@example.com").await;
        let path = format!("/Users/{id}");
        let r = scim.get(&path).await;
        let etag = r.headers["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, r.body["meta"]["version"].as_str().unwrap());
        let r = scim
            .send(
                reqwest::Method::GET,
                &path,
                None,
                &[("if-none-match", &etag)],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        let r = scim
            .send(
                reqwest::Method::PUT,
                &path,
                Some(json!({"schemas": [USER], "userName": "lee@example.com", "title": "t"})),
                &[("if-match", &etag)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.headers["etag"].to_str().unwrap(), etag);
        // A no-op PATCH keeps the version.
        let v = scim.get(&path).await.body["meta"]["version"].clone();
        scim.patch(
            &path,
            json!([{"op": "replace", "path": "title", "value": "t"}]),
        )
        .await;
        assert_eq!(scim.get(&path).await.body["meta"]["version"], v);

        let r = scim
            .post("/Bulk", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "failOnErrors": 1, "Operations": [
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"schemas": [USER], "userName": "bulk1@example.com"}},
                {"method": "POST", "path": "/Groups", "bulkId": "g1", "data": {"schemas": [GROUP], "displayName": "Bulk", "members": [{"value": "bulkId:u1"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "u2", "data": {"schemas": [USER], "userName": "bulk1@example.com"}},
                {"method": "DELETE", "path": "/Users/bulkId:u1"}
            ]}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let ops = r.body["Operations"].as_array().unwrap();
        assert_eq!(
            ops.len(),
            3,
            "failOnErrors stops after the first error: {}",
            r.body
        );
        assert_eq!(
            (
                ops[0]["status"].as_str(),
                ops[1]["status"].as_str(),
                ops[2]["status"].as_str()
            ),
            (Some("201"), Some("201"), Some("409"))
        );
        let group = scim
            .get(
                ops[1]["location"]
                    .as_str()
                    .unwrap()
                    .rsplit_once("/scim/v2")
                    .unwrap()
                    .1,
            )
            .await
            .body;
        assert_eq!(
            group["members"][0]["value"],
            scim.find("/Users", "filter=userName+eq+%22bulk1@example.com%22")
                .await[0]
                .as_str()
        );

        let r = scim
            .post(
                "/Users/.search",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName sw \"bulk\"", "attributes": ["userName"]}),
            )
            .await;
        assert_eq!(r.body["totalResults"], 1);
        assert_eq!(
            r.body["Resources"][0].as_object().unwrap().len(),
            3,
            "schemas, id, userName: {}",
            r.body
        );
        let r = scim.post("/.search", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 10})).await;
        assert_eq!(
            r.body["totalResults"], 3,
            "two users and a group: {}",
            r.body
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn concurrent_clients_lose_nothing() {
    for server in servers().await {
        let scim = std::sync::Arc::new(Scim::new(&server, "Entra").await);
        let gid = scim
            .post("/Groups", json!({"schemas": [GROUP], "displayName": "All"}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut users = Vec::new();
        for i in 0..16 {
            users.push(scim.create_user(&format!("c{i}@example.com")).await);
        }
        let adds = users.iter().cloned().map(|uid| {
            let scim = scim.clone();
            let gpath = format!("/Groups/{gid}");
            tokio::spawn(async move {
                scim.patch(
                    &gpath,
                    json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]),
                )
                .await
                .status
            })
        });
        for handle in adds.collect::<Vec<_>>() {
            assert_eq!(handle.await.unwrap(), StatusCode::NO_CONTENT);
        }
        let mut want = users.clone();
        want.sort();
        assert_eq!(
            member_ids(&scim.get(&format!("/Groups/{gid}")).await.body),
            want
        );

        let creates: Vec<_> = (0..16)
            .map(|_| {
                let scim = scim.clone();
                tokio::spawn(async move {
                    scim.post(
                        "/Users",
                        json!({"schemas": [USER], "userName": "same@example.com"}),
                    )
                    .await
                    .status
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for handle in creates {
            statuses.push(handle.await.unwrap());
        }
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CREATED)
                .count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CONFLICT)
                .count(),
            15,
            "{statuses:?}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn links_use_the_configured_public_url_and_otherwise_the_request_host() {
    let t = TestDb::sqlite().await;
    let config = ServerConfig {
        public_url: Some("https://idm.example.com/tessera/".into()),
        ..ServerConfig::default()
    };
    let server = TestServer::start(t, config).await;
    let scim = Scim::new(&server, "Public URL").await;
    let id = scim.create_user("link@example.com").await;
    let r = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(
        r.body["meta"]["location"],
        format!("https://idm.example.com/tessera/scim/v2/Users/{id}"),
        "a client-sent Host or X-Forwarded-Proto does not change it"
    );
    let r = scim.get("/ServiceProviderConfig").await;
    assert_eq!(
        r.body["meta"]["location"],
        "https://idm.example.com/tessera/scim/v2/ServiceProviderConfig"
    );

    let server = TestServer::start(TestDb::sqlite().await, ServerConfig::default()).await;
    let scim = Scim::new(&server, "Host").await;
    let id = scim.create_user("host@example.com").await;
    let location = scim.get(&format!("/Users/{id}")).await.body["meta"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:")
            && location.ends_with(&format!("/scim/v2/Users/{id}")),
        "{location}"
    );
}

//! SCIM passwords are stored only as Argon2id hashes of exactly what the client sent, in every
//! form a client sets them (create, PUT, PATCH with a path, PATCH without one), and removed by
//! a PATCH `remove`. Hashing happens before the write turn; these check the result.

use serde_json::{Value, json};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{DataSourceKind, MatchingKey};
use tessera_domain::secret::verify_password;
use tessera_scim::patch::parse_patch;
use tessera_scim::resource::normalize_resource;
use tessera_scim::schema::{ResourceKind, ResourceType};
use tessera_store::{ChangeContext, Db, directory, scim, with_pool};
use tessera_testkit::TestDb;

fn ctx() -> ChangeContext {
    ChangeContext::new(Actor::cli())
}

async fn stored_hash(db: &Db, id: &str) -> Option<String> {
    with_pool!(db, |pool| {
        sqlx::query_scalar("SELECT password_hash FROM identities WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

async fn assert_password(db: &Db, id: &str, expected: &str) {
    let hash = stored_hash(db, id).await.expect("a password hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        verify_password(expected, &hash),
        "the hash is of {expected:?}"
    );
}

async fn patch(db: &Db, ds: &str, id: &str, body: Value) {
    let ops = parse_patch(&body).unwrap();
    scim::patch(db, &ctx(), ResourceKind::User, ds, id, &ops, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn passwords_are_hashed_in_every_form_a_client_sets_them() {
    for t in TestDb::all().await {
        let db = &t.db;
        let mut tx = db.begin().await.unwrap();
        let ds = directory::create_data_source(
            &mut tx,
            &ctx(),
            "Passwords",
            DataSourceKind::Scim,
            MatchingKey::UserName,
        )
        .await
        .unwrap()
        .id;
        tx.commit().await.unwrap();
        let rt = ResourceType::of(ResourceKind::User);

        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "pw@example.com", "password": "first Pa55"});
        let doc = normalize_resource(rt, &body).unwrap();
        let id = scim::create(db, &ctx(), ResourceKind::User, &ds, doc)
            .await
            .unwrap()
            .id;
        assert_password(db, &id, "first Pa55").await;

        let put = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "pw@example.com", "password": "second Pa55"});
        let doc = normalize_resource(rt, &put).unwrap();
        scim::replace(db, &ctx(), ResourceKind::User, &ds, &id, doc, None)
            .await
            .unwrap();
        assert_password(db, &id, "second Pa55").await;

        // Okta's form: a path.
        patch(
            db,
            &ds,
            &id,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "password", "value": "third Pa55"}]}),
        )
        .await;
        assert_password(db, &id, "third Pa55").await;

        // No path: the value is an object of attributes.
        patch(db, &ds, &id, json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "value": {"password": "fourth Pa55", "active": true}}]}))
        .await;
        assert_password(db, &id, "fourth Pa55").await;

        patch(
            db,
            &ds,
            &id,
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": "password"}]}),
        )
        .await;
        assert_eq!(stored_hash(db, &id).await, None);
    }
}

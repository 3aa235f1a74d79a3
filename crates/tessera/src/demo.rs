//! `tessera demo`: a fresh store filled with a small organisation, served with a guide to what
//! to open and call. The store lives in its own directory (`./tessera-demo` by default), which
//! is wiped at each start; a marker file makes sure only a directory the demo created is wiped.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tessera_domain::audit::Actor;
use tessera_domain::directory::{
    DataSourceKind, GroupAttributes, IdentityAttributes, IdentityKind, MatchingKey, MemberKind,
};
use tessera_store::{ChangeContext, Db, admin_tokens, directory};

use crate::config::Config;

pub const DEFAULT_DIR: &str = "./tessera-demo";
const MARKER: &str = ".tessera-demo";

/// One person of the demo organisation.
struct Person {
    number: &'static str,
    given: &'static str,
    family: &'static str,
    department: &'static str,
    title: &'static str,
    manager: Option<&'static str>,
}

const fn p(
    number: &'static str,
    given: &'static str,
    family: &'static str,
    department: &'static str,
    title: &'static str,
    manager: Option<&'static str>,
) -> Person {
    Person {
        number,
        given,
        family,
        department,
        title,
        manager,
    }
}

#[rustfmt::skip]
const PEOPLE: &[Person] = &[
    p("E1001", "Amara", "Okafor", "Executive", "Chief Executive Officer", None),
    p("E1002", "Lukas", "Brandt", "Engineering", "VP Engineering", Some("E1001")),
    p("E1003", "Priya", "Raman", "Product", "Head of Product", Some("E1001")),
    p("E1004", "Diego", "Fernández", "Sales", "VP Sales", Some("E1001")),
    p("E1005", "Hannah", "Schulz", "Finance", "Chief Financial Officer", Some("E1001")),
    p("E1006", "Kwame", "Mensah", "People", "Head of People", Some("E1001")),
    p("E1007", "Mei", "Chen", "IT", "IT Manager", Some("E1002")),
    p("E1010", "Sofia", "Rossi", "Engineering", "Engineering Manager, Platform", Some("E1002")),
    p("E1011", "Tom", "Becker", "Engineering", "Senior Platform Engineer", Some("E1010")),
    p("E1012", "Aisha", "Khan", "Engineering", "Platform Engineer", Some("E1010")),
    p("E1013", "Jonas", "Lindqvist", "Engineering", "Site Reliability Engineer", Some("E1010")),
    p("E1014", "Yuki", "Tanaka", "Engineering", "Engineering Manager, Robotics", Some("E1002")),
    p("E1015", "Carlos", "Mendes", "Engineering", "Robotics Engineer", Some("E1014")),
    p("E1016", "Fatima", "Zahra", "Engineering", "Firmware Engineer", Some("E1014")),
    p("E1017", "Liam", "O'Connor", "Engineering", "QA Engineer", Some("E1014")),
    p("E1020", "Elena", "Petrova", "Product", "Product Manager", Some("E1003")),
    p("E1021", "Noah", "Williams", "Product", "Product Designer", Some("E1003")),
    p("E1030", "Grace", "Adeyemi", "Sales", "Account Executive", Some("E1004")),
    p("E1031", "Mateo", "García", "Sales", "Account Executive", Some("E1004")),
    p("E1032", "Chloe", "Martin", "Sales", "Sales Engineer", Some("E1004")),
    p("E1040", "Oliver", "Smith", "Finance", "Financial Controller", Some("E1005")),
    p("E1041", "Isabella", "Costa", "Finance", "Accountant", Some("E1040")),
    p("E1050", "Ravi", "Patel", "People", "HR Business Partner", Some("E1006")),
    p("E1051", "Zoe", "Dubois", "People", "Recruiter", Some("E1006")),
    p("E1060", "Ahmed", "Hassan", "IT", "Systems Administrator", Some("E1007")),
    p("E1061", "Nina", "Kowalski", "IT", "Service Desk Analyst", Some("E1007")),
];

/// (group, description, members by employee number, member groups)
const GROUPS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "Platform Team",
        "Builds and runs the shared platform",
        &["E1010", "E1011", "E1012", "E1013"],
        &[],
    ),
    (
        "Robotics Team",
        "Robot software and firmware",
        &["E1014", "E1015", "E1016", "E1017"],
        &[],
    ),
    (
        "Engineering",
        "Everyone in engineering",
        &["E1002"],
        &["Platform Team", "Robotics Team"],
    ),
    (
        "Product",
        "Product management and design",
        &["E1003", "E1020", "E1021"],
        &[],
    ),
    (
        "Sales",
        "Sales and sales engineering",
        &["E1004", "E1030", "E1031", "E1032"],
        &[],
    ),
    (
        "Finance",
        "Finance and accounting",
        &["E1005", "E1040", "E1041"],
        &[],
    ),
    (
        "Finance Approvers",
        "May approve spend above the team limit",
        &["E1005", "E1040"],
        &[],
    ),
    (
        "People",
        "People operations",
        &["E1006", "E1050", "E1051"],
        &[],
    ),
    (
        "IT Admins",
        "Administrators of company systems",
        &["E1007", "E1060"],
        &[],
    ),
    (
        "On-call Engineers",
        "Current production on-call rota",
        &["E1011", "E1013", "E1060"],
        &[],
    ),
    (
        "Managers",
        "People managers",
        &[
            "E1001", "E1002", "E1003", "E1004", "E1005", "E1006", "E1007", "E1010", "E1014",
            "E1040",
        ],
        &[],
    ),
];

/// Recreates the demo directory, refusing to wipe one the demo did not make.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let is_demo = dir.join(MARKER).is_file();
        let is_empty = std::fs::read_dir(dir)?.next().is_none();
        if !is_demo && !is_empty {
            bail!(
                "{} exists and was not created by `tessera demo`; choose another --data-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "Created by `tessera demo`; wiped at the next demo start.\n",
    )?;
    Ok(())
}

fn email(given: &str, family: &str) -> String {
    let clean = |s: &str| {
        s.to_lowercase()
            .replace('á', "a")
            .replace('í', "i")
            .replace('é', "e")
            .replace('\'', "")
    };
    format!("{}.{}@northwind.example", clean(given), clean(family))
}

/// Loads the organisation in one transaction, every row audited as the system's doing.
pub async fn load(db: &Db) -> anyhow::Result<()> {
    let ctx = ChangeContext::new(Actor::system());
    let mut tx = db.begin().await?;
    let hr = directory::create_data_source(
        &mut tx,
        &ctx,
        "Northwind HR",
        DataSourceKind::Hr,
        MatchingKey::EmployeeNumber,
    )
    .await?;
    let mut ids = std::collections::HashMap::new();
    for Person {
        number,
        given,
        family,
        department,
        title,
        ..
    } in PEOPLE
    {
        let mail = email(given, family);
        let identity = directory::create_identity(
            &mut tx,
            &ctx,
            &hr.id,
            IdentityKind::Person,
            IdentityAttributes {
                user_name: mail.clone(),
                external_id: Some(number.to_string()),
                display_name: Some(format!("{given} {family}")),
                given_name: Some(given.to_string()),
                family_name: Some(family.to_string()),
                email: Some(mail),
                employee_number: Some(number.to_string()),
                department: Some(department.to_string()),
                job_title: Some(title.to_string()),
                manager_id: None,
                source_doc: None,
            },
        )
        .await?;
        ids.insert(*number, identity.id);
    }
    for Person {
        number, manager, ..
    } in PEOPLE
    {
        if let Some(manager) = manager {
            directory::set_manager(&mut tx, &ctx, &ids[number], Some(&ids[manager])).await?;
        }
    }
    let mut group_ids: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    for (name, description, people, subgroups) in GROUPS {
        let group = directory::create_group(
            &mut tx,
            &ctx,
            &hr.id,
            GroupAttributes {
                display_name: name.to_string(),
                description: Some(description.to_string()),
                ..Default::default()
            },
        )
        .await?;
        for number in *people {
            directory::add_group_member(
                &mut tx,
                &ctx,
                &group.id,
                MemberKind::Identity,
                &ids[number],
            )
            .await?;
        }
        for sub in *subgroups {
            directory::add_group_member(
                &mut tx,
                &ctx,
                &group.id,
                MemberKind::Group,
                &group_ids[*sub],
            )
            .await?;
        }
        group_ids.insert(*name, group.id);
    }
    let all_staff = directory::create_group(
        &mut tx,
        &ctx,
        &hr.id,
        GroupAttributes {
            display_name: "All Staff".into(),
            description: Some("Everyone at Northwind Robotics".into()),
            ..Default::default()
        },
    )
    .await?;
    for id in ids.values() {
        directory::add_group_member(&mut tx, &ctx, &all_staff.id, MemberKind::Identity, id).await?;
    }
    // One leaver, to show a suspended identity.
    directory::set_identity_status(
        &mut tx,
        &ctx,
        &ids["E1051"],
        tessera_domain::directory::IdentityStatus::Suspended,
    )
    .await?;
    tx.commit().await?;
    crate::demo_governance::load(db, &ids, &group_ids).await?;
    Ok(())
}

pub async fn run(mut config: Config) -> anyhow::Result<ExitCode> {
    if config.database_url.is_some() {
        bail!(
            "the demo always runs on its own SQLite store; remove --database-url / TESSERA_DATABASE_URL"
        );
    }
    prepare_dir(&config.data_dir)?;
    config.bootstrap_token = None;
    let db = crate::serve::open_db(&config).await?;
    load(&db).await?;
    let mut tx = db.begin().await?;
    let (_, token) =
        admin_tokens::create(&mut tx, &ChangeContext::new(Actor::system()), "demo").await?;
    tx.commit().await?;
    // A SCIM data source, ready for Entra ID or Okta (or curl) to provision into.
    let (_, scim_token, _, _) = crate::commands::issue_scim_token(
        &db,
        &ChangeContext::new(Actor::system()),
        "Demo SCIM",
        "demo",
    )
    .await?;
    db.close().await;

    let data_dir = config.data_dir.display().to_string();
    // The command that runs this very binary, so the hint works with or without `cargo install`.
    let exe =
        std::env::current_exe().map_or_else(|_| "tessera".to_owned(), |p| p.display().to_string());
    let banner: crate::serve::Banner = Box::new(move |base: &str| {
        println!(
            "\nTessera demo: Northwind Robotics ({people} people, {groups} groups) is loaded.\n\
             \n  Admin token:  {token}\n\
             \n  Open or call:\n\
             \x20   curl {base}/readyz\n\
             \x20   curl {base}/metrics\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/whoami\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/identities\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/groups\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/applications\n\
             \x20   curl -H 'Authorization: Bearer {token}' '{base}/api/v1/memberships?status=active&limit=5'\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/group-mappings\n\
             \x20   curl -H 'Authorization: Bearer {token}' {base}/api/v1/rules\n\
             \x20   curl {base}/api/v1/openapi.json\n\
             \n  SCIM 2.0 (data source \"Demo SCIM\"): point Entra ID or Okta at it, or try curl:\n\
             \x20   SCIM URL:    {base}/scim/v2\n\
             \x20   SCIM token:  {scim_token}\n\
             \x20   curl -H 'Authorization: Bearer {scim_token}' -H 'Content-Type: application/scim+json' \\\n\
             \x20        -d '{{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"new.starter@northwind.example\"}}' {base}/scim/v2/Users\n\
             \x20   curl -H 'Authorization: Bearer {scim_token}' '{base}/scim/v2/Users?filter=userName%20sw%20%22new%22'\n\
             \n  Check the audit trail of everything the demo did (in another terminal):\n\
             \x20   {exe} audit verify --data-dir {data_dir}\n\
             \n  Stop with Ctrl-C. The demo store in {data_dir} is recreated at the next start.\n",
            people = PEOPLE.len(),
            groups = GROUPS.len() + 1,
        );
    });
    crate::serve::run(config, Some(banner)).await
}

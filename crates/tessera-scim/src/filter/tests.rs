use proptest::prelude::*;

use super::*;
use crate::ScimType;

fn parse(text: &str) -> Result<Filter, ScimError> {
    parse_filter(text, FilterLimits::default())
}

fn cmp(path: AttrPath, op: CompareOp, v: &str) -> Filter {
    Filter::Compare(path, op, CompValue::Str(v.into()))
}

#[test]
fn every_example_of_rfc_7644_parses_and_round_trips() {
    for text in [
        r#"userName eq "bjensen""#,
        r#"name.familyName co "O'Malley""#,
        r#"userName sw "J""#,
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        "title pr",
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
        r#"title pr and userType eq "Employee""#,
        r#"title pr or userType eq "Intern""#,
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
        r#"emails[type eq "work" and primary eq true]"#,
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
        r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#,
        "id eq \"a\" and manager.value eq \"b\"",
        "age gt 30 and score le 2.5e1 and deleted eq null and active eq false",
    ] {
        let parsed = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let again = parse(&parsed.to_string()).unwrap();
        assert_eq!(again, parsed, "{text} → {parsed}");
    }
}

#[test]
fn structure_and_precedence() {
    assert_eq!(
        parse(r#"a eq "1" or b eq "2" and c eq "3""#).unwrap(),
        Filter::Or(vec![
            cmp(AttrPath::new("a"), CompareOp::Eq, "1"),
            Filter::And(vec![
                cmp(AttrPath::new("b"), CompareOp::Eq, "2"),
                cmp(AttrPath::new("c"), CompareOp::Eq, "3")
            ]),
        ])
    );
    // Chains are flattened; groups of the same operator too.
    let f = parse(r#"a pr and (b pr and c pr) and d pr"#).unwrap();
    assert!(
        matches!(&f, Filter::And(items) if items.len() == 4),
        "{f:?}"
    );
    let f = parse(r#"urn:ietf:params:scim:schemas:core:2.0:User:name.givenName eq "x""#).unwrap();
    assert_eq!(
        f,
        cmp(
            AttrPath {
                uri: Some("urn:ietf:params:scim:schemas:core:2.0:User".into()),
                name: "name".into(),
                sub: Some("givenName".into())
            },
            CompareOp::Eq,
            "x"
        )
    );
    assert_eq!(
        parse(r#"title eq "a \"quoted\" word\n""#).unwrap(),
        cmp(AttrPath::new("title"), CompareOp::Eq, "a \"quoted\" word\n")
    );
}

#[test]
fn operators_and_logical_words_are_case_insensitive() {
    assert_eq!(
        parse(r#"userName EQ "x" AND title Pr"#).unwrap(),
        parse(r#"userName eq "x" and title pr"#).unwrap()
    );
    assert_eq!(
        parse(r#"NOT (a Pr) OR b pR"#).unwrap().to_string(),
        "not (a pr) or b pr"
    );
}

#[test]
fn entra_forms_are_accepted() {
    // Unquoted values (Entra's documented example).
    assert_eq!(
        parse("externalId eq jyoung").unwrap(),
        cmp(AttrPath::new("externalId"), CompareOp::Eq, "jyoung")
    );
    assert_eq!(
        parse("externalId eq 5f7a1c1e-6a3b-4a8e-9d7c-1b2c3d4e5f60").unwrap(),
        cmp(
            AttrPath::new("externalId"),
            CompareOp::Eq,
            "5f7a1c1e-6a3b-4a8e-9d7c-1b2c3d4e5f60"
        )
    );
    assert_eq!(
        parse("employeeNumber eq 007").unwrap(),
        cmp(AttrPath::new("employeeNumber"), CompareOp::Eq, "007")
    );
    assert_eq!(
        parse("n eq 42").unwrap(),
        Filter::Compare(
            AttrPath::new("n"),
            CompareOp::Eq,
            CompValue::Number(42.into())
        )
    );
    // A sub-attribute after a value path.
    assert_eq!(
        parse(r#"emails[type eq "work"].value eq "a@b.example""#).unwrap(),
        Filter::ValuePath(
            AttrPath::new("emails"),
            Box::new(Filter::And(vec![
                cmp(AttrPath::new("type"), CompareOp::Eq, "work"),
                cmp(AttrPath::new("value"), CompareOp::Eq, "a@b.example"),
            ]))
        )
    );
    assert!(parse(r#"emails[type eq "work" and primary eq true].value pr"#).is_ok());
}

fn invalid(text: &str) -> String {
    let e = parse(text).expect_err(text);
    assert_eq!(
        (e.status, e.scim_type),
        (400, Some(ScimType::InvalidFilter)),
        "{text}"
    );
    e.detail
}

#[test]
fn bad_filters_are_invalid_filter_errors_that_say_where() {
    assert!(invalid("").contains("empty"));
    assert!(invalid("   ").contains("empty"));
    assert!(invalid(r#"userName eq "open"#).contains("not closed"));
    assert!(invalid(r#"userName is "x""#).contains("not an operator"));
    assert!(invalid("userName eq").contains("ends too early"));
    assert!(invalid(r#"userName eq "x" extra"#).contains("position 17"));
    assert!(invalid(r#"(userName eq "x""#).contains("ends too early"));
    assert!(invalid(r#"userName eq "x")"#).contains("')'"));
    assert!(invalid(r#"emails[type eq "work""#).contains("ends too early"));
    assert!(
        invalid(r#"emails[type eq "work"]"#.replace("type", "addresses[type eq \"x\"]").as_str())
            .contains("nested")
    );
    assert!(invalid(r#"name.givenName[type eq "x"]"#).contains("sub-attribute"));
    assert!(invalid(r#"1abc eq "x""#).contains("not an attribute path"));
    assert!(invalid(r#"a.b.c eq "x""#).contains("not an attribute path"));
    assert!(invalid(r#"and eq "x" and"#).contains("ends too early"));
    assert!(invalid(r#"userName eq ("x")"#).contains("'('"));
    assert!(invalid(r#"emails[type eq "w"].bad! eq "x""#).contains("not an attribute name"));
}

#[test]
fn limits_bound_length_depth_and_terms() {
    let limits = FilterLimits {
        max_len: 100,
        max_depth: 3,
        max_terms: 4,
    };
    let long = format!(r#"userName eq "{}""#, "x".repeat(100));
    assert!(
        parse_filter(&long, limits)
            .unwrap_err()
            .detail
            .contains("at most 100")
    );
    assert!(parse_filter("((a pr))", limits).is_ok());
    assert!(parse_filter("not ((a pr))", limits).is_ok());
    assert!(parse_filter("not (((a pr)))", limits).is_ok());
    assert!(
        parse_filter("not ((((a pr))))", limits)
            .unwrap_err()
            .detail
            .contains("deeper than 3")
    );
    assert!(parse_filter(r#"((emails[type eq "x"]))"#, limits).is_ok());
    assert!(
        parse_filter(r#"(((emails[type eq "x"])))"#, limits)
            .unwrap_err()
            .detail
            .contains("deeper than 3")
    );
    assert!(parse_filter("a pr and b pr or c pr and d pr", limits).is_ok());
    assert!(
        parse_filter("a pr and b pr or c pr and d pr or e pr", limits)
            .unwrap_err()
            .detail
            .contains("more than 4")
    );
    // The defaults refuse a pathological nesting quickly, without deep recursion.
    let deep = format!("{}a pr{}", "(".repeat(1000), ")".repeat(1000));
    assert!(parse(&deep).unwrap_err().detail.contains("deeper than"));
}

// ---------------------------------------------------------------------------------------------
// Round trip of random filters: Display then parse gives the same tree.

fn attr_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "userName",
        "displayName",
        "title",
        "emails",
        "active",
        "x-y_z1",
        "$ref",
    ])
    .prop_map(str::to_owned)
}

fn attr_path() -> impl Strategy<Value = AttrPath> {
    (
        prop::option::of(prop::sample::select(vec![
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ])),
        attr_name(),
        prop::option::of(attr_name()),
    )
        .prop_map(|(uri, name, sub)| AttrPath {
            uri: uri.map(str::to_owned),
            name,
            sub,
        })
}

fn comp_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        any::<String>().prop_map(CompValue::Str),
        any::<i64>().prop_map(|n| CompValue::Number(n.into())),
        any::<bool>().prop_map(CompValue::Bool),
        Just(CompValue::Null),
    ]
}

fn leaf(path: BoxedStrategy<AttrPath>) -> impl Strategy<Value = Filter> {
    prop_oneof![
        path.clone().prop_map(Filter::Present),
        (
            path,
            prop::sample::select(CompareOp::ALL.to_vec()),
            comp_value()
        )
            .prop_map(|(p, op, v)| Filter::Compare(p, op, v)),
    ]
}

/// Filters as the parser builds them: n-ary nodes flattened, no value path inside another.
fn filter_tree(allow_value_path: bool) -> BoxedStrategy<Filter> {
    let base = if allow_value_path {
        prop_oneof![
            3 => leaf(attr_path().boxed()),
            1 => (attr_name(), filter_tree(false))
                .prop_map(|(name, inner)| Filter::ValuePath(AttrPath::new(&name), Box::new(inner))),
        ]
        .boxed()
    } else {
        leaf(attr_name().prop_map(|n| AttrPath::new(&n)).boxed()).boxed()
    };
    base.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|f| Filter::Not(Box::new(f))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| join(v, Filter::And)),
            prop::collection::vec(inner, 2..4).prop_map(|v| join(v, Filter::Or)),
        ]
    })
    .boxed()
}

proptest! {
    #[test]
    fn display_then_parse_is_the_identity(f in filter_tree(true)) {
        let text = f.to_string();
        let limits = FilterLimits { max_len: 1 << 20, max_depth: 64, max_terms: 10_000 };
        let parsed = parse_filter(&text, limits).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, f, "{}", text);
    }
}

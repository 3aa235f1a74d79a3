//! The schemas Tessera serves (RFC 7643 §4, §8.7): core User, the enterprise User extension and
//! core Group, as static attribute definitions. Everything else (input checking, filters, PATCH,
//! attribute selection, `/Schemas`) is driven by these tables.

use serde_json::{Map, Value, json};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Binary => "binary",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
        }
    }

    /// Values compared as text (with `co`, `sw`, `ew` and ordering).
    pub fn is_textual(self) -> bool {
        matches!(
            self,
            AttrType::String | AttrType::Reference | AttrType::Binary
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute (or sub-attribute) definition.
#[derive(Debug, Clone, Copy)]
pub struct AttrDef {
    pub name: &'static str,
    pub ty: AttrType,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub sub: &'static [AttrDef],
    pub description: &'static str,
}

impl AttrDef {
    /// A single-valued, optional, case-insensitive, writable string: the most common shape.
    const fn string(name: &'static str, description: &'static str) -> AttrDef {
        AttrDef {
            name,
            ty: AttrType::String,
            multi: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical: &[],
            reference_types: &[],
            sub: &[],
            description,
        }
    }
    const fn of(mut self, ty: AttrType) -> Self {
        self.ty = ty;
        self
    }
    const fn complex(mut self, sub: &'static [AttrDef]) -> Self {
        self.ty = AttrType::Complex;
        self.sub = sub;
        self
    }
    const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    const fn mutability(mut self, m: Mutability) -> Self {
        self.mutability = m;
        self
    }
    const fn returned(mut self, r: Returned) -> Self {
        self.returned = r;
        self
    }
    const fn unique(mut self) -> Self {
        self.uniqueness = Uniqueness::Server;
        self
    }
    const fn canonical(mut self, values: &'static [&'static str]) -> Self {
        self.canonical = values;
        self
    }
    const fn references(mut self, types: &'static [&'static str]) -> Self {
        self.ty = AttrType::Reference;
        self.case_exact = true;
        self.reference_types = types;
        self
    }

    /// The sub-attribute called `name`, case-insensitively.
    pub fn sub_attr(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.sub, name)
    }

    /// Whether the client may write this attribute.
    pub fn writable(&self) -> bool {
        !matches!(self.mutability, Mutability::ReadOnly)
    }

    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), json!(self.name));
        out.insert("type".into(), json!(self.ty.as_str()));
        out.insert("multiValued".into(), json!(self.multi));
        out.insert("description".into(), json!(self.description));
        out.insert("required".into(), json!(self.required));
        if self.ty != AttrType::Complex && self.ty != AttrType::Boolean {
            out.insert("caseExact".into(), json!(self.case_exact));
        }
        if !self.canonical.is_empty() {
            out.insert("canonicalValues".into(), json!(self.canonical));
        }
        if !self.reference_types.is_empty() {
            out.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if !self.sub.is_empty() {
            let subs: Vec<Value> = self.sub.iter().map(AttrDef::to_json).collect();
            out.insert("subAttributes".into(), Value::Array(subs));
        }
        out.insert("mutability".into(), json!(self.mutability.as_str()));
        out.insert("returned".into(), json!(self.returned.as_str()));
        out.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        Value::Object(out)
    }
}

/// Finds an attribute definition by name, case-insensitively (RFC 7643 §2.1).
pub fn find_attr(attrs: &'static [AttrDef], name: &str) -> Option<&'static AttrDef> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

#[derive(Debug)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: &'static [AttrDef],
}

impl Schema {
    pub fn attr(&self, name: &str) -> Option<&'static AttrDef> {
        find_attr(self.attributes, name)
    }

    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(AttrDef::to_json).collect::<Vec<_>>(),
            "meta": {
                "resourceType": "Schema",
                "location": format!("{base_url}/Schemas/{}", self.id),
            },
        })
    }
}

/// The kinds of resource Tessera serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

#[derive(Debug)]
pub struct ResourceType {
    pub kind: ResourceKind,
    pub id: &'static str,
    pub endpoint: &'static str,
    pub description: &'static str,
    pub schema: &'static Schema,
    pub extensions: &'static [&'static Schema],
}

impl ResourceType {
    pub fn of(kind: ResourceKind) -> &'static ResourceType {
        match kind {
            ResourceKind::User => &USER_TYPE,
            ResourceKind::Group => &GROUP_TYPE,
        }
    }

    /// The core schema or one of the extensions, by URN (case-insensitively).
    pub fn schema_by_urn(&self, urn: &str) -> Option<&'static Schema> {
        std::iter::once(self.schema)
            .chain(self.extensions.iter().copied())
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    pub fn extension(&self, urn: &str) -> Option<&'static Schema> {
        self.extensions
            .iter()
            .copied()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    pub fn to_json(&self, base_url: &str) -> Value {
        let extensions: Vec<Value> = self
            .extensions
            .iter()
            .map(|s| json!({"schema": s.id, "required": false}))
            .collect();
        json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.id,
            "name": self.id,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": extensions,
            "meta": {
                "resourceType": "ResourceType",
                "location": format!("{base_url}/ResourceTypes/{}", self.id),
            },
        })
    }
}

pub static USER_TYPE: ResourceType = ResourceType {
    kind: ResourceKind::User,
    id: "User",
    endpoint: "/Users",
    description: "People and service identities provisioned by this data source",
    schema: &USER,
    extensions: &[&ENTERPRISE_USER],
};

pub static GROUP_TYPE: ResourceType = ResourceType {
    kind: ResourceKind::Group,
    id: "Group",
    endpoint: "/Groups",
    description: "Groups of users and groups provisioned by this data source",
    schema: &GROUP,
    extensions: &[],
};

pub static RESOURCE_TYPES: [&ResourceType; 2] = [&USER_TYPE, &GROUP_TYPE];

pub static SCHEMAS: [&Schema; 3] = [&USER, &ENTERPRISE_USER, &GROUP];

/// `id`, `externalId` and `meta` (RFC 7643 §3.1): on every resource, in no schema.
pub static COMMON_ATTRIBUTES: &[AttrDef] = &[
    AttrDef::string("id", "Unique identifier assigned by Tessera")
        .exact()
        .mutability(Mutability::ReadOnly)
        .returned(Returned::Always)
        .unique(),
    AttrDef::string(
        "externalId",
        "Identifier assigned by the provisioning client",
    )
    .exact(),
    AttrDef::string("meta", "Resource metadata")
        .mutability(Mutability::ReadOnly)
        .complex(&[
            AttrDef::string("resourceType", "Resource type name")
                .exact()
                .mutability(Mutability::ReadOnly),
            AttrDef::string("created", "When the resource was created")
                .of(AttrType::DateTime)
                .mutability(Mutability::ReadOnly),
            AttrDef::string("lastModified", "When the resource last changed")
                .of(AttrType::DateTime)
                .mutability(Mutability::ReadOnly),
            AttrDef::string("location", "URI of the resource")
                .references(&["uri"])
                .mutability(Mutability::ReadOnly),
            AttrDef::string(
                "version",
                "Weak entity tag of the resource's current version",
            )
            .exact()
            .mutability(Mutability::ReadOnly),
        ]),
];

const PRIMARY: AttrDef = AttrDef::string("primary", "The preferred value").of(AttrType::Boolean);
const DISPLAY: AttrDef = AttrDef::string("display", "A human-readable name");

pub static USER: Schema = Schema {
    id: USER_SCHEMA,
    name: "User",
    description: "User Account",
    attributes: &[
        AttrDef::string(
            "userName",
            "Unique identifier for the user, unique per data source",
        )
        .required()
        .unique(),
        AttrDef::string("name", "The components of the user's name").complex(&[
            AttrDef::string("formatted", "The full name, formatted for display"),
            AttrDef::string("familyName", "The family name"),
            AttrDef::string("givenName", "The given name"),
            AttrDef::string("middleName", "The middle name"),
            AttrDef::string("honorificPrefix", "The honorific prefix"),
            AttrDef::string("honorificSuffix", "The honorific suffix"),
        ]),
        AttrDef::string("displayName", "The name shown to people"),
        AttrDef::string("nickName", "The casual name"),
        AttrDef::string("profileUrl", "The user's online profile").references(&["external"]),
        AttrDef::string("title", "The user's title, such as 'Vice President'"),
        AttrDef::string(
            "userType",
            "The relationship to the organisation, such as 'Employee'",
        ),
        AttrDef::string("preferredLanguage", "Preferred language, such as 'en-GB'"),
        AttrDef::string(
            "locale",
            "Default location for localisation, such as 'en-GB'",
        ),
        AttrDef::string(
            "timezone",
            "Time zone in IANA form, such as 'Europe/London'",
        ),
        AttrDef::string(
            "active",
            "Whether the user may be granted access; false suspends",
        )
        .of(AttrType::Boolean),
        AttrDef::string(
            "password",
            "The user's password: stored only as an Argon2id hash, never returned",
        )
        .exact()
        .mutability(Mutability::WriteOnly)
        .returned(Returned::Never),
        AttrDef::string("emails", "E-mail addresses")
            .multi()
            .complex(&[
                AttrDef::string("value", "The e-mail address"),
                DISPLAY,
                AttrDef::string("type", "The kind of address")
                    .canonical(&["work", "home", "other"]),
                PRIMARY,
            ]),
        AttrDef::string("phoneNumbers", "Telephone numbers")
            .multi()
            .complex(&[
                AttrDef::string("value", "The telephone number"),
                DISPLAY,
                AttrDef::string("type", "The kind of number")
                    .canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
                PRIMARY,
            ]),
        AttrDef::string("ims", "Instant messaging addresses")
            .multi()
            .complex(&[
                AttrDef::string("value", "The address"),
                DISPLAY,
                AttrDef::string("type", "The service")
                    .canonical(&["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]),
                PRIMARY,
            ]),
        AttrDef::string("photos", "Pictures of the user")
            .multi()
            .complex(&[
                AttrDef::string("value", "URL of the picture").references(&["external"]),
                DISPLAY,
                AttrDef::string("type", "The kind of picture").canonical(&["photo", "thumbnail"]),
                PRIMARY,
            ]),
        AttrDef::string("addresses", "Physical mailing addresses")
            .multi()
            .complex(&[
                AttrDef::string("formatted", "The full address, formatted for display"),
                AttrDef::string("streetAddress", "Street, house number and so on"),
                AttrDef::string("locality", "City or locality"),
                AttrDef::string("region", "State or region"),
                AttrDef::string("postalCode", "Postal code"),
                AttrDef::string("country", "Country, as an ISO 3166-1 alpha-2 code"),
                AttrDef::string("type", "The kind of address")
                    .canonical(&["work", "home", "other"]),
                PRIMARY,
            ]),
        AttrDef::string("groups", "Groups the user belongs to directly (read-only)")
            .multi()
            .mutability(Mutability::ReadOnly)
            .complex(&[
                AttrDef::string("value", "The group's id")
                    .exact()
                    .mutability(Mutability::ReadOnly),
                AttrDef::string("$ref", "URI of the group")
                    .references(&["Group"])
                    .mutability(Mutability::ReadOnly),
                AttrDef::string("display", "The group's displayName")
                    .mutability(Mutability::ReadOnly),
                AttrDef::string("type", "How the membership is held")
                    .canonical(&["direct", "indirect"])
                    .mutability(Mutability::ReadOnly),
            ]),
        AttrDef::string("entitlements", "Entitlements of the user")
            .multi()
            .complex(&[
                AttrDef::string("value", "The entitlement"),
                DISPLAY,
                AttrDef::string("type", "The kind of entitlement"),
                PRIMARY,
            ]),
        AttrDef::string("roles", "Roles of the user")
            .multi()
            .complex(&[
                AttrDef::string("value", "The role"),
                DISPLAY,
                AttrDef::string("type", "The kind of role"),
                PRIMARY,
            ]),
        AttrDef::string("x509Certificates", "Certificates of the user")
            .multi()
            .complex(&[
                AttrDef::string("value", "The DER certificate, base64-encoded")
                    .of(AttrType::Binary)
                    .exact(),
                DISPLAY,
                AttrDef::string("type", "The kind of certificate"),
                PRIMARY,
            ]),
    ],
};

pub static ENTERPRISE_USER: Schema = Schema {
    id: ENTERPRISE_USER_SCHEMA,
    name: "EnterpriseUser",
    description: "Enterprise User",
    attributes: &[
        AttrDef::string("employeeNumber", "Identifier assigned by the organisation"),
        AttrDef::string("costCenter", "Cost center"),
        AttrDef::string("organization", "Organisation"),
        AttrDef::string("division", "Division"),
        AttrDef::string("department", "Department"),
        AttrDef::string("manager", "The user's manager").complex(&[
            AttrDef::string("value", "The manager's id").exact(),
            AttrDef::string("$ref", "URI of the manager").references(&["User"]),
            AttrDef::string("displayName", "The manager's displayName")
                .mutability(Mutability::ReadOnly),
        ]),
    ],
};

pub static GROUP: Schema = Schema {
    id: GROUP_SCHEMA,
    name: "Group",
    description: "Group",
    attributes: &[
        AttrDef::string(
            "displayName",
            "The name of the group, unique per data source",
        )
        .required()
        .unique(),
        AttrDef::string("members", "Members of the group: users or groups")
            .multi()
            .complex(&[
                AttrDef::string("value", "The member's id")
                    .exact()
                    .mutability(Mutability::Immutable),
                AttrDef::string("$ref", "URI of the member")
                    .references(&["User", "Group"])
                    .mutability(Mutability::Immutable),
                AttrDef::string("type", "The kind of member")
                    .canonical(&["User", "Group"])
                    .mutability(Mutability::Immutable),
                AttrDef::string("display", "The member's displayName")
                    .mutability(Mutability::ReadOnly),
            ]),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case() {
        assert_eq!(USER.attr("USERNAME").unwrap().name, "userName");
        let emails = USER.attr("emails").unwrap();
        assert!(emails.multi);
        assert_eq!(emails.sub_attr("VALUE").unwrap().name, "value");
        assert!(
            USER_TYPE
                .extension(&ENTERPRISE_USER_SCHEMA.to_uppercase())
                .is_some()
        );
        assert_eq!(USER.attr("password").unwrap().returned, Returned::Never);
    }

    #[test]
    fn schema_json_has_no_nulls_and_uses_camel_case() {
        for schema in SCHEMAS {
            let text = schema.to_json("http://x/scim/v2").to_string();
            assert!(!text.contains("null"), "{text}");
            assert!(text.contains("\"readWrite\""));
        }
    }
}

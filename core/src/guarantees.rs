//! The isolation guarantees of each tier: one list that the probes fill in, the isolation view
//! completes with what is not provided, and the README's "What isolation you get" table is
//! generated from (`markdown_table`).

use crate::domain::Isolation;
use serde::{Deserialize, Serialize};

/// What an isolation check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuaranteeStatus {
    /// A probe tried the forbidden thing as the tenant and was refused (or the setting holds).
    Verified,
    /// A probe found the wall missing.
    Violated,
    /// PostgreSQL cannot separate this between tenants of this tier; `provided_by` says where
    /// it is separated.
    NotProvided,
}

impl GuaranteeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Violated => "violated",
            Self::NotProvided => "not_provided",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "verified" => Some(Self::Verified),
            "violated" => Some(Self::Violated),
            "not_provided" => Some(Self::NotProvided),
            _ => None,
        }
    }
}

/// Whether the tenant can lift a guarantee from its own session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// The server enforces it; the tenant's roles cannot change it (a privilege, a role's
    /// connection limit, a superuser-only setting).
    Wall,
    /// A role-level default: the tenant can change it for its own session with `SET`.
    Default,
    /// Nothing enforces it (a `not_provided` gap).
    None,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wall => "wall",
            Self::Default => "default",
            Self::None => "none",
        }
    }

    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "wall" => Some(Self::Wall),
            "default" => Some(Self::Default),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Where a guarantee applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiers {
    Both,
    SharedOnly,
    DedicatedOnly,
}

impl Tiers {
    pub fn includes(self, isolation: Isolation) -> bool {
        matches!(
            (self, isolation),
            (Self::Both, _)
                | (Self::SharedOnly, Isolation::Shared)
                | (Self::DedicatedOnly, Isolation::Dedicated)
        )
    }
}

/// One guarantee of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Guarantee {
    /// `data`, `identity`, `metadata` or `compute`.
    pub layer: &'static str,
    /// Unique within the layer.
    pub mechanism: &'static str,
    pub tiers: Tiers,
    /// `false`: a gap, reported as `not_provided`.
    pub provided: bool,
    pub enforcement: Enforcement,
    /// What it means, for people (README and the evidence of gaps).
    pub summary: &'static str,
    /// For a gap: which tier or placement closes it.
    pub provided_by: Option<&'static str>,
}

pub const LAYER_DATA: &str = "data";
pub const LAYER_IDENTITY: &str = "identity";
pub const LAYER_METADATA: &str = "metadata";
pub const LAYER_COMPUTE: &str = "compute";

/// Every guarantee, probed ones first, in the order the isolation view lists them.
pub const CATALOG: &[Guarantee] = &[
    Guarantee {
        layer: LAYER_DATA,
        mechanism: "database_connect_privilege",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "The tenant's role may connect to no database on the server but its own \
                  (control database, `postgres`, `template1`, other tenants' databases)",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_DATA,
        mechanism: "pooled_database_connect_privilege",
        tiers: Tiers::DedicatedOnly,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "A dedicated environment's role cannot connect to the pooled database",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_DATA,
        mechanism: "schema_privileges",
        tiers: Tiers::SharedOnly,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "Other schemas of the pooled database cannot be read or written",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_DATA,
        mechanism: "notify_channels",
        tiers: Tiers::SharedOnly,
        provided: false,
        enforcement: Enforcement::None,
        summary: "LISTEN/NOTIFY channels are database-wide: a neighbour in the pooled database \
                  can hear the tenant's notifications and send it its own",
        provided_by: Some("the dedicated tier (a database of its own)"),
    },
    Guarantee {
        layer: LAYER_DATA,
        mechanism: "advisory_locks",
        tiers: Tiers::SharedOnly,
        provided: false,
        enforcement: Enforcement::None,
        summary: "Advisory lock keys are database-wide: a neighbour can take or wait on the \
                  same keys",
        provided_by: Some("the dedicated tier (a database of its own)"),
    },
    Guarantee {
        layer: LAYER_IDENTITY,
        mechanism: "no_create_on_public",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "Nothing can be created in schema `public` or in any schema but the \
                  environment's; in the pooled database no large object either (creating one is \
                  revoked from PUBLIC: it would be unmetered storage outside the schema)",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_IDENTITY,
        mechanism: "role_attributes",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "The environment's roles are not superuser, createrole, createdb, replication \
                  or bypassrls, and the app role is a member of no role",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_METADATA,
        mechanism: "catalog_metadata",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "No catalog comment names a tenant, an environment or its cost tags; object \
                  names carry only opaque ids",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_METADATA,
        mechanism: "schema_structure",
        tiers: Tiers::SharedOnly,
        provided: false,
        enforcement: Enforcement::None,
        summary: "The catalogs of the pooled database show every role in it the neighbours' \
                  table and column names, function source, defaults and row estimates (not their \
                  rows); sessions' `application_name` is visible server-wide",
        provided_by: Some("the dedicated tier (a database of its own)"),
    },
    Guarantee {
        layer: LAYER_COMPUTE,
        mechanism: "role_connection_limit",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "The app role cannot hold more sessions than the blueprint's `connection_limit`",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_COMPUTE,
        mechanism: "temp_file_limit",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Wall,
        summary: "Temporary files are capped by the blueprint's `temp_file_limit_kb` per \
                  process (only a superuser may change it); a parallel query's workers each have \
                  the limit, so one query may write up to (1 + `max_parallel_workers_per_gather`) \
                  times it. Tables (and a dedicated database's large objects) have no disk quota",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_COMPUTE,
        mechanism: "resource_limits",
        tiers: Tiers::Both,
        provided: true,
        enforcement: Enforcement::Default,
        summary: "`statement_timeout`, `idle_in_transaction_session_timeout` and `work_mem` are \
                  set on the app role from the blueprint; defaults the tenant can lift with `SET`",
        provided_by: None,
    },
    Guarantee {
        layer: LAYER_COMPUTE,
        mechanism: "cpu_io",
        tiers: Tiers::Both,
        provided: false,
        enforcement: Enforcement::None,
        summary: "CPU, memory bandwidth and disk I/O are shared with every database on the same \
                  PostgreSQL server",
        provided_by: Some(
            "a dedicated database on a server of its own (`BULKHEAD_TARGET_DEDICATED_URL` \
             pointing at a separate server)",
        ),
    },
];

/// The catalog entry of `layer`/`mechanism`.
pub fn find(layer: &str, mechanism: &str) -> Option<&'static Guarantee> {
    CATALOG
        .iter()
        .find(|g| g.layer == layer && g.mechanism == mechanism)
}

/// The entries that apply to a tier.
pub fn for_tier(isolation: Isolation) -> impl Iterator<Item = &'static Guarantee> {
    CATALOG.iter().filter(move |g| g.tiers.includes(isolation))
}

/// The gaps of a tier, as the isolation view lists them.
pub fn gaps(isolation: Isolation) -> impl Iterator<Item = &'static Guarantee> {
    for_tier(isolation).filter(|g| !g.provided)
}

/// The README's "What isolation you get" table (a test keeps the README equal to it).
pub fn markdown_table() -> String {
    let cell = |g: &Guarantee, isolation: Isolation| -> String {
        if !g.tiers.includes(isolation) {
            "—".to_owned()
        } else if !g.provided {
            "not provided".to_owned()
        } else {
            match g.enforcement {
                Enforcement::Default => "verified (default: `SET` lifts it)".to_owned(),
                _ => "verified (wall)".to_owned(),
            }
        }
    };
    let mut out = String::from(
        "| layer / mechanism | shared (schema in the pooled database) | dedicated (own database) | what it means |\n\
         |---|---|---|---|\n",
    );
    for g in CATALOG {
        let mut summary = g.summary.replace('\n', " ");
        if let Some(by) = g.provided_by {
            summary.push_str(&format!("; provided by {by}"));
        }
        out.push_str(&format!(
            "| {} / `{}` | {} | {} | {} |\n",
            g.layer,
            g.mechanism,
            cell(g, Isolation::Shared),
            cell(g, Isolation::Dedicated),
            summary
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_are_unique_within_their_layer() {
        let mut seen = std::collections::HashSet::new();
        for g in CATALOG {
            assert!(seen.insert((g.layer, g.mechanism)), "{g:?} twice");
            assert_eq!(g.provided, g.provided_by.is_none(), "{g:?}");
            assert_eq!(g.provided, g.enforcement != Enforcement::None, "{g:?}");
        }
    }

    #[test]
    fn each_tier_names_its_gaps() {
        let shared: Vec<_> = gaps(Isolation::Shared).map(|g| g.mechanism).collect();
        assert_eq!(
            shared,
            [
                "notify_channels",
                "advisory_locks",
                "schema_structure",
                "cpu_io"
            ]
        );
        let dedicated: Vec<_> = gaps(Isolation::Dedicated).map(|g| g.mechanism).collect();
        assert_eq!(dedicated, ["cpu_io"]);
    }

    /// The README's table is this catalog: regenerate it with
    /// `BULKHEAD_BLESS=1 cargo test -p bulkhead-core readme_isolation_table`.
    #[test]
    fn readme_isolation_table_is_generated_from_the_catalog() {
        const BEGIN: &str =
            "<!-- isolation-table:begin (generated from core/src/guarantees.rs) -->\n";
        const END: &str = "<!-- isolation-table:end -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let start = readme
            .find(BEGIN)
            .expect("README has the isolation-table markers")
            + BEGIN.len();
        let end = readme[start..].find(END).expect("end marker") + start;
        let table = markdown_table();
        if readme[start..end] != table {
            if std::env::var_os("BULKHEAD_BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
                std::fs::write(&path, updated).expect("write README.md");
            } else {
                panic!(
                    "README.md's isolation table differs from core/src/guarantees.rs; run \
                     BULKHEAD_BLESS=1 cargo test -p bulkhead-core readme_isolation_table\n\n{table}"
                );
            }
        }
    }
}

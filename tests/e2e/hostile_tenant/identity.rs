//! Identity: A cannot become any other role, or give its roles more than they have.

use super::{in_rolled_back_tx, is_refusal, options, run, two_tenants, value, values};
use crate::helpers::{Stack, admin_conn, connect_to, texts};
use diesel::PgConnection;

/// Quoted identifier for a role name read from the catalog.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every role on the server but the session's own: `SET ROLE` and `SET SESSION AUTHORIZATION`
/// to each must be refused. Returns the ones that were not.
fn role_switches(conn: &mut PgConnection, who: &str) -> Vec<String> {
    let roles = values(
        conn,
        "SELECT rolname::text AS v FROM pg_catalog.pg_roles WHERE rolname <> current_user ORDER BY 1",
    );
    assert!(
        roles.iter().any(|r| r == "postgres"),
        "{who} sees the roles: {roles:?}"
    );
    let mut holes = Vec::new();
    for role in &roles {
        for command in ["SET ROLE", "SET SESSION AUTHORIZATION"] {
            let sql = format!("{command} {}", quoted(role));
            match run(conn, &sql) {
                Err(error) if is_refusal(&error) => {}
                // A role of another test that was dropped meanwhile.
                Err(error) if error.contains("does not exist") => {}
                Err(error) => holes.push(format!("{who}: `{sql}` → not a refusal: {error}")),
                Ok(_) => {
                    holes.push(format!("{who}: `{sql}` → succeeded"));
                    let _ = run(conn, "RESET SESSION AUTHORIZATION");
                    let _ = run(conn, "RESET ROLE");
                }
            }
        }
    }
    holes
}

/// Role attributes of `role` that a tenant role must not have, as the session sees them.
fn attributes(conn: &mut PgConnection, role: &str) -> String {
    value(
        conn,
        &format!(
            "SELECT concat_ws(' ', CASE WHEN rolsuper THEN 'SUPERUSER' END,
                    CASE WHEN rolcreaterole THEN 'CREATEROLE' END,
                    CASE WHEN rolcreatedb THEN 'CREATEDB' END,
                    CASE WHEN rolreplication THEN 'REPLICATION' END,
                    CASE WHEN rolbypassrls THEN 'BYPASSRLS' END) AS v
               FROM pg_catalog.pg_roles WHERE rolname = '{role}'"
        ),
    )
}

/// A (with each of its sessions) cannot switch to any other role on the server (B's roles, its
/// own owner role, `postgres`, the predefined roles), cannot give itself attributes or
/// memberships, cannot signal B's backends, cannot log in as its owner role, and finds no
/// SECURITY DEFINER function of another role it could call. Its roles have no attribute and
/// are members of nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cannot_become_anyone_else() {
    let stack = Stack::start(options()).await;
    let world = two_tenants(&stack).await;
    let (a, b) = (&world.a, &world.b);
    let sfx = super::suffix();
    let mut holes = Vec::new();

    // B is connected, so A has a backend of B's to try to signal.
    let mut b_conn = b.shared.connect();
    let b_pid = value(&mut b_conn, "SELECT pg_backend_pid()::text AS v");

    for (label, env) in [("A (shared)", &a.shared), ("A (dedicated)", &a.dedicated)] {
        let (app, owner) = (&env.names.app_role, &env.names.owner_role);
        let mut conn = env.connect();
        run(&mut conn, &format!("SET ROLE {app}")).expect("A may set its own role");
        run(&mut conn, "RESET ROLE").expect("reset");
        holes.extend(role_switches(&mut conn, label));

        for role in [app, owner] {
            let found = attributes(&mut conn, role);
            if !found.is_empty() {
                holes.push(format!("{label}: role {role} has {found}"));
            }
        }
        let memberships = values(
            &mut conn,
            "SELECT r.rolname::text AS v FROM pg_catalog.pg_roles r
              WHERE r.rolname <> current_user AND pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER')",
        );
        if !memberships.is_empty() {
            holes.push(format!("{label}: {app} is a member of {memberships:?}"));
        }
        let callable = values(
            &mut conn,
            "SELECT format('%s (owner %s)', p.oid::regprocedure, pg_catalog.pg_get_userbyid(p.proowner)) AS v
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
              WHERE p.prosecdef AND p.proowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
                AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')",
        );
        for function in callable {
            holes.push(format!(
                "{label} may call SECURITY DEFINER function {function}"
            ));
        }

        let b_app = &b.shared.names.app_role;
        let attempts: Vec<(&str, String)> = vec![
            (
                "make itself superuser",
                format!("ALTER ROLE {app} SUPERUSER"),
            ),
            ("give itself CREATEDB", format!("ALTER ROLE {app} CREATEDB")),
            (
                "give itself CREATEROLE",
                format!("ALTER ROLE {app} CREATEROLE"),
            ),
            (
                "give itself BYPASSRLS",
                format!("ALTER ROLE {app} BYPASSRLS"),
            ),
            (
                "lift its connection limit",
                format!("ALTER ROLE {app} CONNECTION LIMIT -1"),
            ),
            ("join its owner role", format!("GRANT {owner} TO {app}")),
            (
                "let its owner role log in",
                format!("ALTER ROLE {owner} LOGIN"),
            ),
            ("join B's role", format!("GRANT {b_app} TO {app}")),
            (
                "join pg_read_all_data",
                format!("GRANT pg_read_all_data TO {app}"),
            ),
            (
                "join pg_signal_backend",
                format!("GRANT pg_signal_backend TO {app}"),
            ),
            (
                "change B's password",
                format!("ALTER ROLE {b_app} PASSWORD 'taken-{sfx}'"),
            ),
            (
                "create a role",
                format!("CREATE ROLE intruder_{sfx} SUPERUSER"),
            ),
        ];
        for (what, sql) in attempts {
            match in_rolled_back_tx(&mut conn, &sql) {
                Err(error) if is_refusal(&error) => {}
                Err(error) => {
                    holes.push(format!("{label}: {what}: `{sql}` → not a refusal: {error}"))
                }
                Ok(()) => holes.push(format!("{label}: {what}: `{sql}` → succeeded")),
            }
        }
        if env.names.database == stack.pooled_database {
            for function in ["pg_cancel_backend", "pg_terminate_backend"] {
                let sql = format!("SELECT {function}({b_pid})");
                match run(&mut conn, &sql) {
                    Err(error) if is_refusal(&error) => {}
                    other => holes.push(format!("{label}: `{sql}` on B's backend → {other:?}")),
                }
            }
        }

        // The owner role does not log in, not even with the app role's password.
        let mut as_owner = env.creds.clone();
        as_owner["username"] = serde_json::json!(owner);
        if connect_to(&as_owner, &env.names.database).is_ok() {
            holes.push(format!(
                "{label}: logged in as {owner} with the app role's password"
            ));
        }
    }

    // Seen from the server: A's owner roles are members of nothing either.
    let mut server = admin_conn("postgres");
    for env in [&a.shared, &a.dedicated] {
        for role in [&env.names.owner_role, &env.names.app_role] {
            let member_of = texts(
                &mut server,
                &format!(
                    "SELECT g.rolname::text AS v FROM pg_catalog.pg_auth_members m
                       JOIN pg_catalog.pg_roles r ON r.oid = m.member
                       JOIN pg_catalog.pg_roles g ON g.oid = m.roleid WHERE r.rolname = '{role}'"
                ),
            );
            if !member_of.is_empty() {
                holes.push(format!("{role} is a member of {member_of:?}"));
            }
        }
    }
    assert_eq!(
        value(&mut b_conn, "SELECT 'still here' AS v"),
        "still here",
        "B's session survived A's signals"
    );
    assert!(
        holes.is_empty(),
        "A became more than itself:\n{}",
        holes.join("\n")
    );
}

//! `TestApp`: a Bulkhead API on an ephemeral port over a fresh database, and request helpers.

use bulkhead_api::bootstrap::ensure_platform_admin;
use bulkhead_core::config::{BootstrapAdmin, Config};
use bulkhead_core::db;
use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::net::TcpListener;

pub const ADMIN_EMAIL: &str = "admin@bulkhead.test";
pub const ADMIN_PASSWORD: &str = "plum-river-lantern-42";
pub const USER_PASSWORD: &str = "orchard-kettle-cobalt-7";

pub use crate::kit::server_url;

/// Rate limits no test reaches by accident.
pub fn unlimited() -> bulkhead_core::limits::RateLimits {
    let rate = bulkhead_core::limits::Rate {
        per_minute: 6_000_000,
        burst: 1_000_000,
    };
    bulkhead_core::limits::RateLimits {
        principal: rate,
        anonymous: rate,
        principal_writes: rate,
        tenant_writes: rate,
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub db_name: String,
    pub db_url: String,
    /// Access token of the bootstrap platform admin.
    pub admin: String,
    /// Where the API mails invitations: read a token as the invited person would.
    pub mail: crate::smtp::SmtpSink,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with configuration changes applied (TLS, token lifetime, lockout…).
    pub async fn spawn_with(change: impl FnOnce(&mut Config)) -> TestApp {
        let db_name = format!("bh_test_{}", uuid::Uuid::now_v7().simple());
        let mut maintenance = PgConnection::establish(&format!("{}/postgres", server_url()))
            .expect("connect to the maintenance database");
        // Closed to PUBLIC before anyone may connect, as `bulkhead dev` makes it: isolation
        // probes of tests running at the same time would otherwise see a database every tenant
        // role may connect to.
        for statement in [
            format!("CREATE DATABASE {db_name} ALLOW_CONNECTIONS false"),
            format!("REVOKE CONNECT, TEMPORARY ON DATABASE {db_name} FROM PUBLIC"),
            format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"),
        ] {
            diesel::sql_query(statement)
                .execute(&mut maintenance)
                .expect("create test database");
        }
        // No TLS to the local test server: libpq's OpenSSL cleanup at process exit can race an
        // actix worker thread still dropping its pool (seen as a rare SIGSEGV after all tests).
        let db_url = format!("{}/{db_name}?sslmode=disable", server_url());

        let mail = crate::smtp::SmtpSink::start().await;
        let mut config = Config::from_lookup(|_| None).expect("default config");
        config.mail = Some(bulkhead_core::config::MailDelivery::Smtp { url: mail.url() });
        config.database_url = db_url.clone();
        config.db_pool_size = 8;
        config.http_workers = 2;
        config.bootstrap_admin = Some(BootstrapAdmin {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
        });
        // Tests fire requests faster than any client should; `rate_limits` tests set their own.
        config.limits.rate = unlimited();
        // Tests count one denied row per refusal; `denials` tests set their own allowance.
        config.limits.denials.chained_per_minute = 1_000_000;
        // No worker runs here, so jobs pile up; `quotas` tests set their own.
        config.limits.quotas = bulkhead_core::limits::QuotaDefaults {
            environments: 10_000,
            queued_jobs: 10_000,
            api_keys: 10_000,
            members: 10_000,
        };
        change(&mut config);

        let pool = db::connect(&config.database_url, config.db_pool_size).expect("pool");
        db::run_migrations(&mut pool.get().expect("conn")).expect("migrations");
        ensure_platform_admin(&pool, config.bootstrap_admin.as_ref())
            .await
            .expect("bootstrap admin");
        let https = config.tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let service = bulkhead_api::build_on(config, pool, listener)
            .await
            .expect("build");
        let base = format!(
            "{}://localhost:{}",
            if https { "https" } else { "http" },
            service.addr.port()
        );
        tokio::spawn(service.server);
        let mut app = TestApp {
            base,
            client: reqwest::Client::new(),
            db_name,
            db_url,
            admin: String::new(),
            mail,
        };
        if !https {
            app.admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        }
        app
    }

    /// A second API process on this app's database (another replica): returns its base URL.
    pub async fn replica(&self) -> String {
        let mut config = Config::from_lookup(|_| None).expect("default config");
        config.database_url = self.db_url.clone();
        config.db_pool_size = 4;
        config.http_workers = 2;
        config.limits.rate = unlimited();
        config.mail = Some(bulkhead_core::config::MailDelivery::Smtp {
            url: self.mail.url(),
        });
        let pool = db::connect(&config.database_url, config.db_pool_size).expect("pool");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let service = bulkhead_api::build_on(config, pool, listener)
            .await
            .expect("build replica");
        let base = format!("http://localhost:{}", service.addr.port());
        tokio::spawn(service.server);
        base
    }

    /// The shared kit's view of this API.
    pub fn api(&self) -> crate::kit::Api<'_> {
        crate::kit::Api {
            base: &self.base,
            client: &self.client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.api().url(path)
    }

    /// A direct connection to this test's database, for assertions and tampering.
    pub fn db(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("connect to test database")
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.api().login(email, password).await
    }

    /// Sends a request with a bearer token and an optional JSON body; returns status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api().call(method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, token, None).await
    }

    /// A development environment `name` in `tenant` (as the admin): the 202 body
    /// `{environment, job}`. No worker runs in these tests: its apply job stays queued.
    pub async fn create_environment(&self, tenant: &str, name: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/tenants/{tenant}/environments"),
                &self.admin,
                json!({"name": name, "stage": "development", "cost_tags": {"business_unit": "wms"}}),
            )
            .await;
        assert_eq!(status, 202, "create environment {name}: {body}");
        body
    }

    /// POSTs `action` (`plan`, `apply`, `drift-check`) on `env` as the admin; the queued job.
    pub async fn job_action(&self, tenant: &str, env: &str, action: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/tenants/{tenant}/environments/{env}/{action}"),
                &self.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{action} {env}: {body}");
        body["job"].clone()
    }

    /// Creates a tenant as the platform admin; returns its JSON.
    pub async fn create_tenant(&self, slug: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/tenants",
                &self.admin,
                json!({"slug": slug, "name": format!("Tenant {slug}"), "tier": "shared",
                       "region": "eu-west-1", "cost_tags": {"cost_center": "cc-1"}}),
            )
            .await;
        assert_eq!(status, 201, "create tenant {slug}: {body}");
        body
    }

    /// Adds `email` to `tenant` with `role` (as the admin); the person accepts as the mail
    /// says (with `USER_PASSWORD`) and signs in. Returns (principal id, access token).
    pub async fn member(&self, tenant: &str, email: &str, role: &str) -> (String, String) {
        self.api()
            .join(&self.mail, &self.admin, tenant, email, role, USER_PASSWORD)
            .await
    }

    /// The account behind `session` accepts the membership `tenant` offered it.
    pub async fn accept_membership(&self, tenant: &str, session: &str) {
        let (_, tenant_view) = self
            .get(&format!("/v1/tenants/{tenant}"), &self.admin)
            .await;
        let tenant_id = tenant_view["id"].as_str().expect("tenant id").to_owned();
        let (status, accepted) = self
            .post(
                &format!("/v1/me/invitations/{tenant_id}/accept"),
                session,
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "accept the membership in {tenant}: {accepted}");
    }

    pub async fn accept_invitation(&self, token: &str, password: &str) {
        self.api().accept_invitation(token, password).await
    }

    /// Creates a partner account (as the admin) and logs it in; returns its token.
    pub async fn partner(&self, email: &str) -> (String, String) {
        let (status, body) = self
            .post("/v1/partners", &self.admin, json!({"email": email}))
            .await;
        assert_eq!(status, 201, "create partner: {body}");
        assert!(
            body["invitation"]["token"].is_null(),
            "no token in a response: {body}"
        );
        let token = self.mail.invitation_token(email).await;
        self.accept_invitation(&token, USER_PASSWORD).await;
        (
            body["principal_id"].as_str().expect("id").to_owned(),
            self.login(email, USER_PASSWORD).await,
        )
    }

    /// Creates an API key in `tenant` with `role` (as the platform admin, or, for a role with
    /// more than the admin holds there, as a tenant admin); returns (key id, secret).
    pub async fn api_key(&self, tenant: &str, role: &str) -> (String, String) {
        let path = format!("/v1/tenants/{tenant}/api-keys");
        let body = json!({"name": format!("{role} key"), "role": role});
        let (mut status, mut body_out) = self.post(&path, &self.admin, body.clone()).await;
        if status == 403 {
            let email = format!("keys-{}@{tenant}.example", uuid::Uuid::now_v7().simple());
            let (_, tenant_admin) = self.member(tenant, &email, "tenant_admin").await;
            (status, body_out) = self.post(&path, &tenant_admin, body).await;
        }
        let body = body_out;
        assert_eq!(status, 201, "create api key: {body}");
        (
            body["api_key"]["id"].as_str().expect("id").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// Number of rows in a table of this test's database.
    pub fn count(&self, table: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut self.db())
            .expect("count")
            .n
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&format!("{}/postgres", server_url())) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .execute(&mut conn);
        }
    }
}

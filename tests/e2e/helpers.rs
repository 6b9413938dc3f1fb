//! `Stack`: the real `bulkhead api` and `bulkhead worker` binaries over a control database,
//! queue names and a pooled target database made for one test, and removed after it: processes,
//! databases, roles, canary objects, broker queues and exchanges, temporary files.

use bulkhead_core::domain::Isolation;
use bulkhead_core::plan::{self, EnvNames};
use diesel::sql_types::{Nullable, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_EMAIL: &str = "admin@e2e.test";
pub const ADMIN_PASSWORD: &str = "plum-river-lantern-42";
pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const BROKER_ADDR: &str = "127.0.0.1:5672";

pub use crate::kit::server_url;

/// A blueprint (file name, TOML) like shared-basic named `$name`, whose second baseline
/// migration sleeps `$seconds`, so a test can act while an apply is in the middle of a step.
macro_rules! slow_shared_blueprint {
    ($name:literal, $seconds:literal) => {
        (
            concat!($name, ".toml"),
            concat!(
                "name = \"",
                $name,
                r#""
version = 1
isolation = "shared"
description = "e2e: a shared environment whose baseline has a slow step."

[limits]
connection_limit = 5
statement_timeout_ms = 30000

[[baseline]]
id = "0001_orders"
sql = """
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text NOT NULL);
"""

[[baseline]]
id = "0002_slow"
sql = "SELECT pg_sleep("#,
                $seconds,
                r#");"

[[baseline]]
id = "0003_order_notes"
sql = "CREATE INDEX orders_note ON orders (note);"
"#
            ),
        )
    };
}
pub(crate) use slow_shared_blueprint;

/// The slow step takes 1.5 s.
pub const SLOW_SHARED: (&str, &str) = slow_shared_blueprint!("slow-shared", "1.5");

/// A blueprint whose second baseline migration always fails with a transient-looking error
/// (`serialization_failure`), which the worker retries.
pub const FLAKY_SHARED: (&str, &str) = (
    "flaky-shared.toml",
    r#"name = "flaky-shared"
version = 1
isolation = "shared"
description = "e2e: a shared environment whose baseline always fails as if by a transient error."

[limits]
connection_limit = 5
statement_timeout_ms = 30000

[[baseline]]
id = "0001_orders"
sql = "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"

[[baseline]]
id = "0002_flaky"
sql = "DO $$BEGIN RAISE EXCEPTION 'could not serialize access (e2e)' USING ERRCODE = 'serialization_failure'; END$$;"
"#,
);

/// A blueprint whose second baseline migration always fails (division by zero).
pub const BROKEN_SHARED: (&str, &str) = (
    "broken-shared.toml",
    r#"name = "broken-shared"
version = 1
isolation = "shared"
description = "e2e: a shared environment whose baseline always fails."

[limits]
connection_limit = 5
statement_timeout_ms = 30000

[[baseline]]
id = "0001_orders"
sql = "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"

[[baseline]]
id = "0002_boom"
sql = "SELECT 1/0;"
"#,
);

#[derive(Default, Clone)]
pub struct Options {
    /// Broker URL of both processes (default the local RabbitMQ); a test may put a proxy in
    /// between.
    pub amqp_url: Option<String>,
    /// Extra environment for the API and the workers (job settings the API reads too, such as
    /// `BULKHEAD_JOB_MAX_ATTEMPTS`).
    pub env: Vec<(String, String)>,
    /// Extra environment for the worker processes only.
    pub worker_env: Vec<(String, String)>,
    /// Worker processes to start (at least one unless `no_workers`).
    pub workers: usize,
    pub no_workers: bool,
    /// Extra blueprint files `(file name, TOML)`: when any, both processes read a blueprint
    /// directory holding the standard `infra/blueprints/*.toml` plus these.
    pub blueprints: Vec<(&'static str, &'static str)>,
}

pub struct Stack {
    pub id: String,
    /// `BULKHEAD_QUEUE_PREFIX`.
    pub prefix: String,
    pub db_url: String,
    pub pooled_database: String,
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    api: Child,
    pub workers: Vec<Child>,
    /// Operators' access tokens by tenant slug (see `operator`).
    operators: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Where the API mails invitations.
    pub mail: crate::smtp::SmtpSink,
    env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    /// Logs of the processes and the blueprint directory.
    dir: PathBuf,
}

/// A port for a binary to listen on, below the kernel's ephemeral range. A port the kernel
/// hands out for `:0` comes from that range, which outgoing connections draw from too: between
/// this check and the binary's own bind, one of the many connections the tests open could take
/// it (`Address already in use`, seen once in CI while other work ran on the machine). Below
/// the range only another listener can, and ports are taken in turn per test process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000, ephemeral_from.max(12_000));
    let start = std::process::id() * 97;
    for _ in 0..(high - low) {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % (high - low);
        let port = u16::try_from(low + offset).expect("port below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {low} to {high}")
}

pub fn admin_conn(database: &str) -> PgConnection {
    PgConnection::establish(&format!("{}/{database}", server_url()))
        .unwrap_or_else(|e| panic!("connect to {database} as postgres: {e}"))
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// Runs `sql` (one text column named `v`) and returns its values.
pub fn texts(conn: &mut PgConnection, sql: &str) -> Vec<Option<String>> {
    diesel::sql_query(sql)
        .load::<TextRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.v)
        .collect()
}

/// Runs `sql` with one text parameter; returns the first row's `v`.
pub fn text1(conn: &mut PgConnection, sql: &str, param: &str) -> Option<String> {
    diesel::sql_query(sql)
        .bind::<Text, _>(param)
        .load::<TextRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .next()
        .and_then(|r| r.v)
}

pub fn execute(conn: &mut PgConnection, sql: &str) {
    diesel::sql_query(sql)
        .execute(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = std::env::temp_dir().join(format!("bh-e2e-{id}"));
        std::fs::create_dir_all(&dir).expect("stack directory");
        let db_name = format!("bh_e2e_{id}");
        execute(
            &mut admin_conn("postgres"),
            &format!("CREATE DATABASE {db_name} ALLOW_CONNECTIONS false"),
        );
        // Closed to PUBLIC before anyone may connect, as `bulkhead dev` makes it: other tests'
        // isolation probes would otherwise see a database every tenant role may connect to.
        let mut admin = admin_conn("postgres");
        execute(
            &mut admin,
            &format!("REVOKE CONNECT, TEMPORARY ON DATABASE {db_name} FROM PUBLIC"),
        );
        execute(
            &mut admin,
            &format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"),
        );
        let db_url = format!("{}/{db_name}", server_url());
        let port = free_port();
        let pooled_database = format!("bh_pool_{id}");
        let prefix = format!("e2e-{id}");
        let mail = crate::smtp::SmtpSink::start().await;
        let mut env: Vec<(String, String)> = vec![
            ("BULKHEAD_SMTP_URL".into(), mail.url()),
            ("DATABASE_URL".into(), db_url.clone()),
            ("BULKHEAD_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            (
                "BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD".into(),
                ADMIN_PASSWORD.into(),
            ),
            ("BULKHEAD_QUEUE_PREFIX".into(), prefix.clone()),
            (
                "BULKHEAD_TARGET_POOLED_DATABASE".into(),
                pooled_database.clone(),
            ),
            (
                "BULKHEAD_TARGET_SHARED_URL".into(),
                format!("{}/postgres", server_url()),
            ),
            (
                "BULKHEAD_TARGET_DEDICATED_URL".into(),
                format!("{}/postgres", server_url()),
            ),
            ("BULKHEAD_HTTP_WORKERS".into(), "2".into()),
            ("BULKHEAD_DB_POOL_SIZE".into(), "5".into()),
            ("BULKHEAD_MAX_CONCURRENT_HASHES".into(), "1".into()),
            (
                "BULKHEAD_CREDENTIALS_KEY".into(),
                hex::encode(rand::random::<[u8; 32]>()),
            ),
            (
                "AMQP_URL".into(),
                options
                    .amqp_url
                    .clone()
                    .unwrap_or_else(|| BROKER_URL.into()),
            ),
            (
                "RUST_LOG".into(),
                "warn,bulkhead=info,bulkhead_worker=info,bulkhead_core=info,bulkhead_api=info"
                    .into(),
            ),
            ("NO_COLOR".into(), "1".into()),
        ];
        if !options.blueprints.is_empty() {
            let blueprints = dir.join("blueprints");
            std::fs::create_dir_all(&blueprints).expect("blueprint directory");
            let standard = Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/blueprints");
            for entry in std::fs::read_dir(&standard).expect("infra/blueprints") {
                let path = entry.expect("blueprint entry").path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let name = path.file_name().expect("file name");
                    std::fs::copy(&path, blueprints.join(name)).expect("copy blueprint");
                }
            }
            for (name, text) in &options.blueprints {
                std::fs::write(blueprints.join(name), text).expect("write blueprint");
            }
            env.push((
                "BULKHEAD_BLUEPRINTS_DIR".into(),
                blueprints.display().to_string(),
            ));
        }
        env.extend(options.env.iter().cloned());
        let api = spawn(&env, &[], "api", &dir.join("api.log"));
        let mut stack = Stack {
            id,
            prefix,
            db_url,
            pooled_database,
            base: format!("http://127.0.0.1:{port}"),
            // Idle connections go before the API's 5 s keep-alive closes them (a request on a
            // connection the server is closing fails with IncompleteMessage).
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            admin: String::new(),
            api,
            workers: Vec::new(),
            operators: std::sync::Mutex::default(),
            mail,
            env,
            worker_env: options.worker_env.clone(),
            dir,
        };
        stack.wait_ready().await;
        if !options.no_workers {
            for _ in 0..options.workers.max(1) {
                stack.spawn_worker();
            }
        }
        stack.admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        for index in 0..stack.workers.len() {
            stack.wait_worker_consuming(index).await;
        }
        stack
    }

    fn worker_log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("worker-{index}.log"))
    }

    pub fn spawn_worker(&mut self) -> usize {
        let index = self.workers.len();
        let worker = spawn(
            &self.env,
            &self.worker_env,
            "worker",
            &self.worker_log(index),
        );
        self.workers.push(worker);
        index
    }

    /// A worker with `extra` settings on top of the stack's (such as a `DATABASE_URL` through a
    /// proxy the test can cut).
    pub fn spawn_worker_with(&mut self, extra: &[(String, String)]) -> usize {
        let index = self.workers.len();
        let mut env = self.worker_env.clone();
        env.extend(extra.iter().cloned());
        let worker = spawn(&self.env, &env, "worker", &self.worker_log(index));
        self.workers.push(worker);
        index
    }

    /// Waits until worker `index` logged that it consumes (prepared its targets, subscribed).
    pub async fn wait_worker_consuming(&mut self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(self.worker_log(index)).unwrap_or_default();
            if log.contains("worker consuming") {
                return;
            }
            if let Some(status) = self.workers[index].try_wait().expect("worker status") {
                panic!("worker {index} exited during start-up: {status}\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "worker {index} not consuming within 30 s:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker process whose id (`<hostname>-<pid>`) is `owner`.
    pub fn worker_index(&self, owner: &str) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| owner.ends_with(&format!("-{}", w.id())))
    }

    /// `kill -9`: no step boundary, no lease given back.
    pub fn kill_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.kill().expect("kill -9 worker");
        worker.wait().expect("reap worker");
    }

    /// SIGTERM, then wait for the process to exit by itself.
    pub async fn terminate_worker(
        &mut self,
        index: usize,
        within: Duration,
    ) -> std::process::ExitStatus {
        let pid = self.workers[index].id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.workers[index].try_wait().expect("wait worker") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit within {within:?} of SIGTERM:\n{}",
                tail(&self.worker_log(index), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.api.try_wait().expect("api status") {
                panic!(
                    "bulkhead api exited during start-up: {status}\n{}",
                    tail(&self.dir.join("api.log"), 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "bulkhead api not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    pub async fn login(&self, email: &str, password: &str) -> String {
        self.api().login(email, password).await
    }

    /// Sends a request (bearer `token` unless empty, optional JSON body): status and body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api().call(method, path, token, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, &self.admin, None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, &self.admin, Some(body))
            .await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, &self.admin, None)
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, &self.admin, None)
            .await
    }

    pub async fn create_tenant(&self, slug: &str, tier: &str) -> Value {
        self.create_tenant_with_tags(
            slug,
            tier,
            json!({"business_unit": "wms", "cost_center": "cc-1"}),
        )
        .await
    }

    pub async fn create_tenant_with_tags(&self, slug: &str, tier: &str, cost_tags: Value) -> Value {
        let (status, body) = self
            .post(
                "/v1/tenants",
                json!({"slug": slug, "name": slug, "tier": tier, "region": "eu-west-1",
                       "cost_tags": cost_tags}),
            )
            .await;
        assert_eq!(status, 201, "create tenant: {body}");
        body
    }

    /// POSTs an environment; returns the 202 body ({environment, job}).
    pub async fn create_environment(&self, tenant: &str, body: Value) -> Value {
        let (status, response) = self
            .post(&format!("/v1/tenants/{tenant}/environments"), body)
            .await;
        assert_eq!(status, 202, "create environment: {response}");
        response
    }

    /// POSTs a job action (`plan`, `apply`, `drift-check`) on an environment; returns the job.
    pub async fn job_action(
        &self,
        tenant: &str,
        env: &str,
        action: &str,
        body: Option<Value>,
    ) -> Value {
        let path = format!("/v1/tenants/{tenant}/environments/{env}/{action}");
        let (status, response) = match body {
            Some(body) => self.post(&path, body).await,
            None => self.post_empty(&path).await,
        };
        assert_eq!(status, 202, "{action}: {response}");
        response["job"].clone()
    }

    pub async fn job(&self, tenant: &str, job_id: &str) -> Value {
        let (status, job) = self
            .get(&format!("/v1/tenants/{tenant}/jobs/{job_id}"))
            .await;
        assert_eq!(status, 200, "get job: {job}");
        job
    }

    /// Polls the job until it is finished; returns it.
    pub async fn wait_job(&self, tenant: &str, job_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(tenant, job_id).await;
            if matches!(
                job["state"].as_str(),
                Some("succeeded" | "failed" | "canceled" | "rejected" | "expired")
            ) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not finished within {within:?}: {job}\nevents: {:?}",
                self.event_kinds(tenant, job_id).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls the job until it is in `state` (failing at once if it finished in another).
    pub async fn wait_job_state(
        &self,
        tenant: &str,
        job_id: &str,
        state: &str,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(tenant, job_id).await;
            if job["state"] == state {
                return job;
            }
            assert!(
                job["finished_at"].is_null() && Instant::now() < deadline,
                "job {job_id} not {state} within {within:?}: {job}\nevents: {:?}",
                self.event_kinds(tenant, job_id).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Lets the tenant's production changes run without approvals, for tests about something
    /// else (the default policy wants one approval in production).
    pub async fn without_approvals(&self, tenant: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/tenants/{tenant}/policy"),
                &self.admin,
                Some(serde_json::json!({"stages": {"production": {"approvals_required": 0}}})),
            )
            .await;
        assert_eq!(status, 200, "policy without approvals: {body}");
    }

    /// Polls the job until it succeeded (failing at once if it failed).
    pub async fn wait_succeeded(&self, tenant: &str, job_id: &str, within: Duration) -> Value {
        let job = self.wait_job(tenant, job_id, within).await;
        assert_eq!(
            job["state"],
            "succeeded",
            "job {job_id}: {job}\nevents: {:#?}",
            self.events(tenant, job_id).await
        );
        job
    }

    /// Every event of a job, oldest first.
    pub async fn events(&self, tenant: &str, job_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tenants/{tenant}/jobs/{job_id}/events?limit=200");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "job events: {page}");
            all.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return all,
            }
        }
    }

    pub async fn event_kinds(&self, tenant: &str, job_id: &str) -> Vec<String> {
        self.events(tenant, job_id)
            .await
            .iter()
            .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn environment(&self, tenant: &str, env: &str) -> Value {
        let (status, body) = self
            .get(&format!("/v1/tenants/{tenant}/environments/{env}"))
            .await;
        assert_eq!(status, 200, "get environment: {body}");
        body
    }

    pub async fn wait_environment(
        &self,
        tenant: &str,
        env: &str,
        state: &str,
        within: Duration,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let environment = self.environment(tenant, env).await;
            if environment["state"] == state {
                return environment;
            }
            assert!(
                Instant::now() < deadline,
                "environment {env} not {state} within {within:?}: {environment}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The environment's credentials, read as an operator of the tenant (the people they are
    /// for; platform admins may not read them). The operator is invited on first use.
    pub async fn credentials(&self, tenant: &str, env: &str) -> Value {
        let token = self.operator(tenant).await;
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/tenants/{tenant}/environments/{env}/credentials"),
                &token,
                None,
            )
            .await;
        assert_eq!(status, 200, "credentials: {body}");
        body
    }

    /// An access token of `ops@<tenant>.test`, an operator of `tenant`.
    pub async fn operator(&self, tenant: &str) -> String {
        self.person(tenant, "operator").await
    }

    /// An access token of a person holding `role` in `tenant` (invited by the platform admin).
    pub async fn person(&self, tenant: &str, role: &str) -> String {
        let key = format!("{tenant}/{role}");
        if let Some(token) = self
            .operators
            .lock()
            .ok()
            .and_then(|tokens| tokens.get(&key).cloned())
        {
            return token;
        }
        let email = match role {
            "operator" => format!("ops@{tenant}.test"),
            other => format!("{other}@{tenant}.test"),
        };
        let (_, token) = self
            .api()
            .join(
                &self.mail,
                &self.admin,
                tenant,
                &email,
                role,
                ADMIN_PASSWORD,
            )
            .await;
        if let Ok(mut tokens) = self.operators.lock() {
            tokens.insert(key, token.clone());
        }
        token
    }

    /// Runs `bulkhead <args>` with the stack's configuration plus `extra`; success and output.
    pub fn run_bulkhead(&self, args: &[&str], extra: &[(&str, &str)]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.envs(extra.iter().copied());
        let output = cmd.output().expect("run bulkhead");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    pub fn control_db(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("control db")
    }

    /// The worker id holding the job's lease, read from the control database.
    pub fn lease_owner(&self, job_id: &str) -> Option<String> {
        text1(
            &mut self.control_db(),
            "SELECT lease_owner AS v FROM jobs WHERE id = $1::uuid",
            job_id,
        )
    }

    /// Names of an environment's objects on the target.
    pub fn names(&self, environment: &Value) -> EnvNames {
        let id = environment["id"]
            .as_str()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .expect("environment id");
        let isolation = match environment["isolation"].as_str() {
            Some("dedicated") => Isolation::Dedicated,
            _ => Isolation::Shared,
        };
        plan::names(id, isolation, &self.pooled_database)
    }

    /// Whether anything of the environment is left on the target.
    pub fn leftovers(&self, environment: &Value) -> Vec<String> {
        let names = self.names(environment);
        let mut left = Vec::new();
        for role in [&names.owner_role, &names.app_role] {
            if exists("role", role, None) {
                left.push(format!("role {role}"));
            }
        }
        if environment["isolation"] == "dedicated" {
            if exists("database", &names.database, None) {
                left.push(format!("database {}", names.database));
            }
        } else if exists("schema", &names.schema, Some(&self.pooled_database)) {
            left.push(format!("schema {}", names.schema));
        }
        left
    }

    pub fn topology(&self) -> bulkhead_core::queue::Topology {
        bulkhead_core::queue::Topology::with_prefix(&self.prefix)
    }

    /// The canary database the executor makes next to the pooled database.
    pub fn canary_database(&self) -> String {
        let digest = plan::sha256_hex(self.pooled_database.as_bytes());
        format!("bk_canary_{}", &digest[..16])
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = format!("--- api.log\n{}", tail(&self.dir.join("api.log"), lines));
        for index in 0..self.workers.len() {
            out.push_str(&format!(
                "\n--- worker-{index}.log (pid {})\n{}",
                self.workers[index].id(),
                tail(&self.worker_log(index), lines)
            ));
        }
        out
    }

    fn remove_target_objects(&self) {
        // Environments' databases and roles are cluster-wide: remove whatever this test's
        // environments left (tests that destroy assert there is nothing left before this).
        let mut environments: Vec<EnvNames> = Vec::new();
        if let Ok(mut control) = PgConnection::establish(&self.db_url) {
            #[derive(QueryableByName)]
            struct Env {
                #[diesel(sql_type = diesel::sql_types::Uuid)]
                id: uuid::Uuid,
                #[diesel(sql_type = Text)]
                isolation: String,
            }
            let rows: Vec<Env> = diesel::sql_query("SELECT id, isolation FROM environments")
                .load(&mut control)
                .unwrap_or_default();
            environments = rows
                .into_iter()
                .map(|e| {
                    let isolation = if e.isolation == "dedicated" {
                        Isolation::Dedicated
                    } else {
                        Isolation::Shared
                    };
                    plan::names(e.id, isolation, &self.pooled_database)
                })
                .collect();
        }
        let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", server_url())) else {
            eprintln!("stack {}: cannot reach PostgreSQL to clean up", self.id);
            return;
        };
        // Dedicated environments' fence rows on the maintenance database outlive them.
        let ids: Vec<String> = environments
            .iter()
            .filter_map(|n| n.owner_role.strip_prefix("bk_"))
            .filter_map(|rest| rest.strip_suffix("_owner"))
            .filter_map(|hex| uuid::Uuid::try_parse(hex).ok())
            .map(|id| format!("'{id}'"))
            .collect();
        if !ids.is_empty() {
            let _ = diesel::connection::SimpleConnection::batch_execute(
                &mut admin,
                &format!(
                    "DO $$BEGIN IF to_regclass('bulkhead_meta.fence') IS NOT NULL THEN \
                     DELETE FROM bulkhead_meta.fence WHERE environment_id IN ({}); END IF; END$$",
                    ids.join(", ")
                ),
            );
        }
        let mut databases: Vec<String> = environments
            .iter()
            .filter(|n| n.database != self.pooled_database)
            .map(|n| n.database.clone())
            .collect();
        databases.push(self.pooled_database.clone());
        databases.push(self.canary_database());
        let spare_prefix = format!(
            "bk_spare_{}_",
            &plan::sha256_hex(self.pooled_database.as_bytes())[..12]
        );
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let spares: Vec<Name> = diesel::sql_query(
            "SELECT datname::text AS name FROM pg_database WHERE left(datname, length($1)) = $1",
        )
        .bind::<Text, _>(&spare_prefix)
        .load(&mut admin)
        .unwrap_or_default();
        databases.extend(spares.into_iter().map(|s| s.name));
        for database in &databases {
            if let Err(e) = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .execute(&mut admin)
            {
                eprintln!("stack {}: drop database {database}: {e}", self.id);
            }
        }
        for names in &environments {
            for role in [&names.app_role, &names.owner_role] {
                if !exists("role", role, None) {
                    continue;
                }
                // Privileges on shared objects (such as the maintenance database) go first.
                let _ = diesel::sql_query(format!("DROP OWNED BY \"{role}\"")).execute(&mut admin);
                if let Err(e) =
                    diesel::sql_query(format!("DROP ROLE IF EXISTS \"{role}\"")).execute(&mut admin)
                {
                    eprintln!("stack {}: drop role {role}: {e}", self.id);
                }
            }
        }
        let control = self
            .db_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Err(e) = diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS \"{control}\" WITH (FORCE)"
        ))
        .execute(&mut admin)
        {
            eprintln!("stack {}: drop control database {control}: {e}", self.id);
        }
    }
}

fn spawn(env: &[(String, String)], extra: &[(String, String)], command: &str, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    // The binaries log to stdout; both streams go to the log file.
    cmd.arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("log file handle")))
        .stderr(Stdio::from(file));
    for (k, v) in env.iter().chain(extra) {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn bulkhead")
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a role, schema or database with `name` exists on the local server.
pub fn exists(kind: &str, name: &str, database: Option<&str>) -> bool {
    let sql = match kind {
        "role" => "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)::text AS v",
        "database" => "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)::text AS v",
        "schema" => "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)::text AS v",
        other => panic!("unknown kind {other}"),
    };
    let mut conn = admin_conn(database.unwrap_or("postgres"));
    text1(&mut conn, sql, name).as_deref() == Some("true")
}

/// Connects with the credentials the API handed out (its `url`).
pub fn connect_as(credentials: &Value) -> Result<PgConnection, String> {
    let url = credentials["url"].as_str().expect("credentials url");
    PgConnection::establish(url).map_err(|e| e.to_string())
}

/// Connects as the credentials' user and password to another database.
pub fn connect_to(credentials: &Value, database: &str) -> Result<PgConnection, String> {
    let url = format!(
        "postgres://{}:{}@{}:{}/{database}",
        credentials["username"].as_str().expect("username"),
        credentials["password"].as_str().expect("password"),
        credentials["host"].as_str().expect("host"),
        credentials["port"].as_i64().expect("port"),
    );
    PgConnection::establish(&url).map_err(|e| e.to_string())
}

/// Broker operations of a test: runs lapin on a fresh thread with its own runtime, so it works
/// from async tests and from `Drop` alike.
pub fn on_broker<T: Send + 'static>(
    work: impl FnOnce(
        lapin::Channel,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, lapin::Error>> + Send>,
    > + Send
    + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let session = async {
                let connection =
                    lapin::Connection::connect(BROKER_URL, lapin::ConnectionProperties::default())
                        .await?;
                let channel = connection.create_channel().await?;
                let result = work(channel).await;
                let _ = connection.close(200, "done".into()).await;
                result
            };
            match tokio::time::timeout(Duration::from_secs(15), session).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("broker operation timed out".to_owned()),
            }
        })
    })
    .join()
    .map_err(|_| "broker thread panicked".to_owned())?
}

/// Publishes a job message the way the relay does (exchange `<prefix>.jobs`, key `job`).
pub fn publish_job_message(stack: &Stack, job_id: &str, operation: &str) {
    let exchange = stack.topology().exchange;
    let body = serde_json::to_vec(&json!({"v": 1, "job_id": job_id, "operation": operation}))
        .expect("message");
    on_broker(move |channel| {
        Box::pin(async move {
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    "job".into(),
                    lapin::options::BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            Ok(confirm.is_ack())
        })
    })
    .map(|acked| assert!(acked, "broker did not confirm the message"))
    .expect("publish a job message");
}

/// Messages ready in a queue (passive declare: fails if the queue does not exist).
pub fn queue_depth(queue: &str) -> u32 {
    let queue = queue.to_owned();
    on_broker(move |channel| {
        Box::pin(async move {
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await?;
            Ok(declared.message_count())
        })
    })
    .expect("queue depth")
}

/// Takes every message out of a queue (acking them) and returns their bodies as JSON.
pub fn drain_queue(queue: &str) -> Vec<Value> {
    let queue = queue.to_owned();
    on_broker(move |channel| {
        Box::pin(async move {
            let mut bodies = Vec::new();
            while let Some(message) = channel
                .basic_get(
                    queue.as_str().into(),
                    lapin::options::BasicGetOptions::default(),
                )
                .await?
            {
                bodies.push(
                    serde_json::from_slice(&message.delivery.data).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&message.delivery.data).into_owned())
                    }),
                );
                message
                    .delivery
                    .ack(lapin::options::BasicAckOptions::default())
                    .await?;
            }
            Ok(bodies)
        })
    })
    .expect("drain queue")
}

impl Drop for Stack {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let _ = self.api.kill();
        let _ = self.api.wait();
        if failed {
            eprintln!(
                "stack {} logs (kept in {}):\n{}",
                self.id,
                self.dir.display(),
                self.log_tail(60)
            );
        }
        self.remove_target_objects();
        let topology = self.topology();
        let removed = on_broker(move |channel| {
            Box::pin(async move {
                for queue in [&topology.queue, &topology.dead_letter_queue] {
                    channel
                        .queue_delete(
                            queue.as_str().into(),
                            lapin::options::QueueDeleteOptions::default(),
                        )
                        .await?;
                }
                for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
                    channel
                        .exchange_delete(
                            exchange.as_str().into(),
                            lapin::options::ExchangeDeleteOptions::default(),
                        )
                        .await?;
                }
                Ok(())
            })
        });
        if let Err(e) = removed {
            eprintln!("stack {}: removing broker objects: {e}", self.id);
        }
        if !failed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

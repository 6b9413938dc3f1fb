//! `Stack`: the real `bulkhead api` and `bulkhead worker` binaries over a control database,
//! queue names and a pooled target database made for one test, and removed after it.

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_EMAIL: &str = "admin@e2e.test";
pub const ADMIN_PASSWORD: &str = "plum-river-lantern-42";

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

#[derive(Default, Clone)]
pub struct Options {
    /// Broker URL (default the local RabbitMQ); a test may put a proxy in between.
    pub amqp_url: Option<String>,
    /// Extra environment for the worker processes.
    pub worker_env: Vec<(String, String)>,
    pub workers: usize,
}

pub struct Stack {
    pub id: String,
    pub db_url: String,
    pub pooled_database: String,
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    api: Child,
    pub workers: Vec<Child>,
    env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let db_name = format!("bh_e2e_{id}");
        let mut maintenance =
            PgConnection::establish(&format!("{}/postgres", server_url())).expect("maintenance db");
        diesel::sql_query(format!("CREATE DATABASE {db_name}"))
            .execute(&mut maintenance)
            .expect("create control db");
        let db_url = format!("{}/{db_name}", server_url());
        let port = free_port();
        let pooled_database = format!("bh_pool_{id}");
        let env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db_url.clone()),
            ("BULKHEAD_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("BULKHEAD_BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
            ("BULKHEAD_BOOTSTRAP_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("BULKHEAD_QUEUE_PREFIX".into(), format!("e2e-{id}")),
            ("BULKHEAD_TARGET_POOLED_DATABASE".into(), pooled_database.clone()),
            ("BULKHEAD_TARGET_SHARED_URL".into(), format!("{}/postgres", server_url())),
            ("BULKHEAD_TARGET_DEDICATED_URL".into(), format!("{}/postgres", server_url())),
            ("BULKHEAD_HTTP_WORKERS".into(), "2".into()),
            ("BULKHEAD_DB_POOL_SIZE".into(), "6".into()),
            (
                "AMQP_URL".into(),
                options
                    .amqp_url
                    .clone()
                    .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
            ),
            ("RUST_LOG".into(), "warn,bulkhead=info".into()),
        ];
        let api = spawn(&env, &[], "api");
        let mut stack = Stack {
            id,
            db_url,
            pooled_database,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            admin: String::new(),
            api,
            workers: Vec::new(),
            env,
            worker_env: options.worker_env.clone(),
        };
        stack.wait_ready().await;
        for _ in 0..options.workers.max(1) {
            stack.spawn_worker();
        }
        stack.admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        stack
    }

    pub fn spawn_worker(&mut self) -> usize {
        let worker = spawn(&self.env, &self.worker_env, "worker");
        self.workers.push(worker);
        self.workers.len() - 1
    }

    /// `kill -9`: no step boundary, no lease given back.
    pub fn kill_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        let _ = worker.kill();
        let _ = worker.wait();
    }

    /// SIGTERM, then wait for the process to exit by itself.
    pub fn terminate_worker(&mut self, index: usize, within: Duration) -> std::process::ExitStatus {
        let worker = &mut self.workers[index];
        let status = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = worker.try_wait().expect("wait worker") {
                return status;
            }
            assert!(Instant::now() < deadline, "worker did not exit within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.api.try_wait().expect("api status") {
                panic!("bulkhead api exited during start-up: {status}");
            }
            assert!(Instant::now() < deadline, "bulkhead api not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .call(reqwest::Method::POST, "/v1/auth/login", "", Some(json!({"email": email, "password": password})))
            .await;
        assert_eq!(status, 200, "login: {body}");
        body["access_token"].as_str().expect("token").to_owned()
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, &self.admin, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, &self.admin, Some(body)).await
    }

    pub async fn create_tenant(&self, slug: &str, tier: &str) -> Value {
        let (status, body) = self
            .post(
                "/v1/tenants",
                json!({"slug": slug, "name": slug, "tier": tier, "region": "eu-west-1",
                       "cost_tags": {"business_unit": "wms", "cost_center": "cc-1"}}),
            )
            .await;
        assert_eq!(status, 201, "create tenant: {body}");
        body
    }

    /// POSTs an environment; returns the 202 body ({environment, job}).
    pub async fn create_environment(&self, tenant: &str, name: &str, isolation: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/tenants/{tenant}/environments"),
                json!({"name": name, "stage": "development", "isolation": isolation}),
            )
            .await;
        assert_eq!(status, 202, "create environment: {body}");
        body
    }

    /// Polls the job until it is finished; returns it.
    pub async fn wait_job(&self, tenant: &str, job_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, job) = self.get(&format!("/v1/tenants/{tenant}/jobs/{job_id}")).await;
            assert_eq!(status, 200, "get job: {job}");
            if matches!(job["state"].as_str(), Some("succeeded" | "failed" | "canceled")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {job_id} not finished within {within:?}: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn credentials(&self, tenant: &str, env: &str) -> Value {
        let (status, body) = self
            .get(&format!("/v1/tenants/{tenant}/environments/{env}/credentials"))
            .await;
        assert_eq!(status, 200, "credentials: {body}");
        body
    }

    pub fn control_db(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("control db")
    }
}

fn spawn(env: &[(String, String)], extra: &[(String, String)], command: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    cmd.arg(command).stdout(Stdio::null()).stderr(Stdio::inherit());
    for (k, v) in env.iter().chain(extra) {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn bulkhead")
}

/// Whether a role, schema or database with `name` exists on the local server.
pub fn exists(kind: &str, name: &str, database: Option<&str>) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let db = database.unwrap_or("postgres");
    let mut conn = PgConnection::establish(&format!("{}/{db}", server_url())).expect("connect");
    let sql = match kind {
        "role" => "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS found",
        "database" => "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found",
        "schema" => "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS found",
        other => panic!("unknown kind {other}"),
    };
    diesel::sql_query(sql)
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Found>(&mut conn)
        .expect("exists query")
        .found
}

impl Drop for Stack {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let _ = self.api.kill();
        let _ = self.api.wait();
        // Environments' databases and roles are cluster-wide: remove whatever this test's
        // environments left (tests that destroy assert there is nothing left before this).
        if let Ok(mut control) = PgConnection::establish(&self.db_url) {
            #[derive(diesel::QueryableByName)]
            struct Env {
                #[diesel(sql_type = diesel::sql_types::Uuid)]
                id: uuid::Uuid,
            }
            let envs: Vec<Env> = diesel::sql_query("SELECT id FROM environments")
                .load(&mut control)
                .unwrap_or_default();
            drop(control);
            if let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", server_url())) {
                for env in envs {
                    let base = format!("bk_{}", env.id.simple());
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {base} WITH (FORCE)"))
                        .execute(&mut admin);
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.pooled_database))
                        .execute(&mut admin);
                    for suffix in ["_app", "_owner"] {
                        let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS {base}{suffix}")).execute(&mut admin);
                    }
                }
            }
        }
        if let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", server_url())) {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.pooled_database))
                .execute(&mut admin);
            let name = self.db_url.rsplit('/').next().unwrap_or_default().to_owned();
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
        }
    }
}

//! What the benchmarks that drive a real `bulkhead api` share: waiting for it, logging in.

use serde_json::{Value, json};
use std::time::Duration;

/// Waits until `/readyz` answers 200 (10 s at most).
pub async fn wait_ready(
    client: &reqwest::Client,
    base: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for _ in 0..100 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("bulkhead api did not become ready".into())
}

/// Signs in; the access token.
pub async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let body: Value = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["access_token"].as_str().ok_or("no token")?.to_owned())
}

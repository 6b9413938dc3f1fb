//! An email address is proven by its mailbox: invitation tokens travel only by mail (over
//! real SMTP to a sink the test starts), never in an API response; the mail outbox keeps a
//! record of what was sent without the token, and retries when the relay is unreachable.

use crate::helpers::{TestApp, USER_PASSWORD};
use serde_json::json;

#[derive(diesel::QueryableByName, Debug)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    sent: bool,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    last_error: Option<String>,
}

fn outbox(app: &TestApp, recipient: &str) -> Vec<Row> {
    use diesel::RunQueryDsl;
    diesel::sql_query(
        "SELECT body, sent_at IS NOT NULL AS sent, attempts, last_error FROM mail_outbox \
         WHERE recipient = $1 ORDER BY created_at",
    )
    .bind::<diesel::sql_types::Text, _>(recipient)
    .load(&mut app.db())
    .expect("outbox rows")
}

/// The claim attack from the issue: an inviter who got the token back could accept it with a
/// password of their own and own the address platform-wide, so that a later grant to that
/// address by another tenant went to them.
#[tokio::test]
async fn an_inviter_cannot_claim_the_address_it_invites() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (_, acme_admin) = app
        .member("acme", "boss@acme.example", "tenant_admin")
        .await;
    let victim = "cfo@globex.example";
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &acme_admin,
            json!({"email": victim, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // What the inviter gets back: where the token went and when it expires, not the token.
    assert!(added["invitation"]["token"].is_null(), "{added}");
    assert_eq!(added["invitation"]["mailed_to"], victim);
    let token = app.mail.invitation_token(victim).await;
    assert!(
        !added.to_string().contains(&token),
        "the token is in the response"
    );
    // The mailbox's owner accepts; only they could.
    let accepted = app
        .client
        .post(app.url("/v1/auth/accept-invitation"))
        .json(&json!({"token": token, "password": USER_PASSWORD}))
        .send()
        .await
        .expect("accept");
    assert_eq!(accepted.status(), 200);
    // globex later makes the address its tenant admin: the grant reaches the real owner.
    let (status, added) = app
        .post(
            "/v1/tenants/globex/members",
            &app.admin,
            json!({"email": victim, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // An existing account: the grant is offered to it, and only its owner can accept it.
    assert_eq!(added["member"]["state"], "invited", "{added}");
    let (status, _) = app.get("/v1/tenants/globex", &acme_admin).await;
    assert_eq!(status, 404);
    let owner = app.login(victim, USER_PASSWORD).await;
    app.accept_membership("globex", &owner).await;
    let (status, _) = app.get("/v1/tenants/globex", &owner).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_outbox_records_what_was_sent_without_the_token() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let email = "sam@acme.example";
    let (status, _) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "operator"}),
        )
        .await;
    assert_eq!(status, 201);
    let token = app.mail.invitation_token(email).await;
    let mail = app.mail.mails_to(email).pop().expect("the mail");
    assert!(mail.text.contains("tenant 'Tenant acme'"), "{}", mail.text);
    assert!(mail.text.contains("as operator"), "{}", mail.text);
    // Marked sent right after delivery; give the relay a moment to record it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let row = loop {
        let rows = outbox(&app, email);
        if rows.len() == 1 && rows[0].sent {
            break rows.into_iter().next().expect("row");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not marked sent: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!row.body.contains(&token), "the record keeps the token");
    assert!(row.body.contains("bki_<removed once sent>"), "{}", row.body);
    assert_eq!(row.attempts, 1);
}

#[tokio::test]
async fn an_unreachable_relay_loses_no_invitation() {
    // Nothing listens on port 1: every attempt fails, is recorded and retried.
    let app = TestApp::spawn_with(|config| {
        config.mail = Some(bulkhead_core::config::MailDelivery::Smtp {
            url: "smtp://127.0.0.1:1".to_owned(),
        });
    })
    .await;
    app.create_tenant("acme").await;
    let email = "later@acme.example";
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "viewer"}),
        )
        .await;
    assert_eq!(
        status, 201,
        "the invitation stands while the relay is down: {added}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows = outbox(&app, email);
        if let Some(row) = rows.first()
            && row.last_error.is_some()
        {
            assert!(!row.sent, "{row:?}");
            assert!(row.attempts >= 1);
            assert!(row.body.contains("bki_"), "kept for the next attempt");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt recorded: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A membership given to an account that exists is only offered: it grants nothing until that
/// account accepts it signed in; it can be declined, offered again, and it lapses.
#[tokio::test]
async fn an_existing_account_holds_nothing_until_it_accepts() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme_id = acme["id"].as_str().expect("id").to_owned();
    let email = "pat@globex.example";
    let (principal, pat) = app.member("globex", email, "viewer").await;

    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "tenant_admin"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["member"]["state"], "invited", "{added}");
    assert_eq!(added["member"]["invitation_pending"], true);
    assert_eq!(added["invitation"]["mailed_to"], email);
    // Offered, not granted: acme stays invisible to pat.
    let (status, _) = app.get("/v1/tenants/acme", &pat).await;
    assert_eq!(status, 404);
    let (_, me) = app.get("/v1/me", &pat).await;
    assert_eq!(me["memberships"].as_array().map(Vec::len), Some(1), "{me}");
    // The mail says how to accept, without any token.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while app.mail.mails_to(email).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no offer mail");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let offer = app.mail.mails_to(email).pop().expect("offer");
    assert!(
        offer
            .text
            .contains(&format!("/v1/me/invitations/{acme_id}/accept")),
        "{}",
        offer.text
    );
    assert!(
        crate::smtp::token_in(&offer.text).is_none(),
        "{}",
        offer.text
    );
    // The tenant's member list shows it pending.
    let (_, members) = app.get("/v1/tenants/acme/members", &app.admin).await;
    let listed = members["items"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|m| m["principal_id"] == principal.as_str())
                .cloned()
        })
        .expect("listed");
    assert_eq!(listed["state"], "invited");

    // pat sees it, declines it; it is gone. Offered again, pat accepts it.
    let (status, pending) = app.get("/v1/me/invitations", &pat).await;
    assert_eq!(status, 200);
    assert_eq!(pending["items"][0]["tenant_slug"], "acme", "{pending}");
    assert_eq!(pending["items"][0]["role"], "tenant_admin");
    let decline = format!("/v1/me/invitations/{acme_id}/decline");
    let (status, _) = app.post(&decline, &pat, json!({})).await;
    assert_eq!(status, 204);
    let (status, _) = app.post(&decline, &pat, json!({})).await;
    assert_eq!(status, 404, "declined once");
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": email, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // Someone else cannot accept it for pat.
    let (_, other) = app.member("globex", "eve@globex.example", "viewer").await;
    let accept = format!("/v1/me/invitations/{acme_id}/accept");
    let (status, _) = app.post(&accept, &other, json!({})).await;
    assert_eq!(status, 404);
    let (status, accepted) = app.post(&accept, &pat, json!({})).await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["role"], "viewer");
    let (status, _) = app.get("/v1/tenants/acme", &pat).await;
    assert_eq!(status, 200, "the membership holds once accepted");

    // An offer lapses after 72 hours.
    app.member("acme", "boss@acme.example", "tenant_admin")
        .await;
    let (_, late) = app.member("globex", "late@globex.example", "viewer").await;
    let (status, _) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": "late@globex.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201);
    {
        use diesel::RunQueryDsl;
        diesel::sql_query(
            "UPDATE memberships SET invitation_expires_at = now() - interval '1 minute' \
             WHERE state = 'invited'",
        )
        .execute(&mut app.db())
        .expect("expire the offer");
    }
    let (status, body) = app.post(&accept, &late, json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
}

/// Offers end with whoever made them, keys add nobody, and a leaving tenant takes on nobody.
#[tokio::test]
async fn offers_end_with_whoever_made_them() {
    let app = TestApp::spawn().await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme_id = acme["id"].as_str().expect("id").to_owned();
    let (boss_id, boss) = app
        .member("acme", "boss@acme.example", "tenant_admin")
        .await;
    let (pat_id, pat) = app.member("globex", "pat@globex.example", "viewer").await;
    let (status, added) = app
        .post(
            "/v1/tenants/acme/members",
            &boss,
            json!({"email": "pat@globex.example", "role": "operator"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // The platform admin removes boss: the offer boss made goes too.
    let (status, _) = app
        .delete(&format!("/v1/tenants/acme/members/{boss_id}"), &app.admin)
        .await;
    assert_eq!(status, 204);
    // The trail says the offer ended, and why.
    assert_eq!(
        app.count(&format!(
            "audit_events WHERE action = 'member.delete' AND target = 'principal/{pat_id}' \
             AND tenant_id = '{acme_id}' AND details->>'withdrawn_offer' = 'true' \
             AND details->>'offered_by' = 'principal/{boss_id}'"
        )),
        1
    );
    let (status, body) = app
        .post(
            &format!("/v1/me/invitations/{acme_id}/accept"),
            &pat,
            json!({}),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // An API key adds no people, whatever its role.
    let (_, key) = app.api_key("acme", "tenant_admin").await;
    let (status, body) = app
        .post(
            "/v1/tenants/acme/members",
            &key,
            json!({"email": "friend@example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // A tenant that is leaving takes on nobody, even by an offer made before.
    let (status, _) = app
        .post(
            "/v1/tenants/acme/members",
            &app.admin,
            json!({"email": "pat@globex.example", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = app.delete("/v1/tenants/acme", &app.admin).await;
    assert_eq!(status, 202);
    let (status, _) = app
        .post(
            &format!("/v1/me/invitations/{acme_id}/accept"),
            &pat,
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_address_is_mailed_at_most_three_times_a_day_per_tenant() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    // An account in use elsewhere: acme offers it a membership, then "re-sends" the offer.
    app.member("globex", "pat@globex.test", "viewer").await;
    let offer = json!({"email": "pat@globex.test", "role": "viewer"});
    for round in 1..=3 {
        let (status, body) = app
            .post("/v1/tenants/acme/members", &app.admin, offer.clone())
            .await;
        assert_eq!(status, 201, "offer {round}: {body}");
    }
    let (status, body) = app
        .post("/v1/tenants/acme/members", &app.admin, offer.clone())
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["type"],
        "https://bulkhead.dev/problems/too-many-requests"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("3 times"),
        "{body}"
    );
}

/// What adding `email` to acme shows its admin, with what necessarily differs per call (ids,
/// times, the address itself) taken out.
fn shape(value: &serde_json::Value, email: &str) -> serde_json::Value {
    let text = value.to_string().replace(email, "<email>");
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for key in [
                    "principal_id",
                    "created_at",
                    "expires_at",
                    "invitation_expires_at",
                ] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// Adding a member tells the caller nothing about the address: a fresh address, an account in
/// use in another tenant and an account invited elsewhere but never set up get the same answer,
/// the same member-list entry and the same audit record; none grants anything until its owner
/// accepts. (Before this, a fresh address came back `active` with an invitation, an account in
/// use `invited`, and a dormant one with no invitation at all.)
#[tokio::test]
async fn adding_a_member_does_not_tell_whether_the_address_has_an_account() {
    use diesel::RunQueryDsl;
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (_, acme_admin) = app
        .member("acme", "boss@acme.example", "tenant_admin")
        .await;
    let (in_use, dormant, fresh) = (
        "used@globex.example",
        "dormant@globex.example",
        "fresh@elsewhere.example",
    );
    app.member("globex", in_use, "viewer").await;
    let (status, body) = app
        .post(
            "/v1/tenants/globex/members",
            &app.admin,
            json!({"email": dormant, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let mut answers = Vec::new();
    for email in [fresh, in_use, dormant] {
        let (status, added) = app
            .post(
                "/v1/tenants/acme/members",
                &acme_admin,
                json!({"email": email, "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 201, "{added}");
        answers.push(shape(&added, email));
    }
    assert_eq!(answers[0], answers[1], "fresh vs in use");
    assert_eq!(answers[0], answers[2], "fresh vs dormant");
    assert_eq!(answers[0]["member"]["state"], "invited");

    let (status, listed) = app.get("/v1/tenants/acme/members", &acme_admin).await;
    assert_eq!(status, 200, "{listed}");
    let entry = |email: &str| {
        let item = listed["items"]
            .as_array()
            .and_then(|items| items.iter().find(|m| m["email"] == email).cloned())
            .unwrap_or_else(|| panic!("{email} listed: {listed}"));
        shape(&item, email)
    };
    assert_eq!(entry(fresh), entry(in_use));
    assert_eq!(entry(fresh), entry(dormant));

    let (status, audit) = app
        .get("/v1/tenants/acme/audit-events?limit=100", &acme_admin)
        .await;
    assert_eq!(status, 200, "{audit}");
    let record = |email: &str| {
        let item = audit["items"]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|e| e["action"] == "member.create" && e["details"]["email"] == email)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("audit of {email}: {audit}"));
        shape(&item["details"], email)
    };
    assert_eq!(record(fresh), record(in_use));
    assert_eq!(record(fresh), record(dormant));

    // Nothing is granted yet: no one of the three reads acme.
    let in_use_session = app.login(in_use, USER_PASSWORD).await;
    let (status, _) = app.get("/v1/tenants/acme", &in_use_session).await;
    assert_eq!(status, 404, "an offer grants nothing");

    // Each takes it up as its mail says: the account in use signs in and accepts; the dormant
    // one accepts the invitation it got from globex, which takes up acme's offer too.
    app.accept_membership("acme", &in_use_session).await;
    let (status, _) = app.get("/v1/tenants/acme", &in_use_session).await;
    assert_eq!(status, 200);
    let offer = app
        .mail
        .mail_after(dormant, 1)
        .await
        .text
        .replace("=\r\n", "");
    assert!(
        offer.contains("accepting the invitation mailed to you earlier"),
        "{offer}"
    );
    let first = app.mail.mail_after(dormant, 0).await.text;
    let token = crate::smtp::token_in(&first).expect("globex's invitation token");
    app.accept_invitation(&token, USER_PASSWORD).await;
    let dormant_session = app.login(dormant, USER_PASSWORD).await;
    for tenant in ["acme", "globex"] {
        let (status, body) = app
            .get(&format!("/v1/tenants/{tenant}"), &dormant_session)
            .await;
        assert_eq!(status, 200, "{tenant}: {body}");
    }
    // The fresh address, once its owner proves the mailbox, is an active member with its
    // own display name from then on.
    let token = app.mail.invitation_token(fresh).await;
    app.accept_invitation(&token, USER_PASSWORD).await;
    #[derive(diesel::QueryableByName)]
    struct State {
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
    }
    let states: Vec<State> = diesel::sql_query(
        "SELECT m.state FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
         WHERE t.slug = 'acme' AND m.principal_id <> (SELECT id FROM principals WHERE email = \
         'admin@bulkhead.test')",
    )
    .load(&mut app.db())
    .expect("states");
    assert_eq!(states.len(), 4, "boss and the three");
    assert!(states.iter().all(|s| s.state == "active"));
}

/// The member an add answers with is the one the member list then shows, for each kind of
/// offer: a new address, an account in use, an offer re-sent (keeping when it was made), and
/// a platform admin re-inviting an account that never accepted.
#[tokio::test]
async fn an_added_member_is_answered_as_the_list_shows_it() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    app.member("globex", "pat@globex.test", "viewer").await;
    let mut first_offer = None;
    for (email, role) in [
        ("new@acme.test", "operator"),
        ("pat@globex.test", "viewer"),
        ("pat@globex.test", "approver"),
        ("new@acme.test", "billing"),
    ] {
        let (status, added) = app
            .post(
                "/v1/tenants/acme/members",
                &app.admin,
                json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "{email} as {role}: {added}");
        let member = &added["member"];
        assert_eq!(member["role"], role);
        assert_eq!(
            *member,
            listed(&app, &member["principal_id"]).await,
            "{email} as {role}"
        );
        if email == "pat@globex.test" {
            // Re-sent: the membership keeps the time it was first offered.
            let created = member["created_at"].clone();
            assert_eq!(*first_offer.get_or_insert(created.clone()), created);
        }
    }
}

/// An add refused (the address is already a member) mails nothing, so it spends none of the
/// address's three mails a day: before, the attempt was counted in a commit of its own.
#[tokio::test]
async fn a_refused_add_spends_none_of_the_mail_limit() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let (principal, _) = app.member("acme", "pat@acme.test", "viewer").await;
    let again = json!({"email": "pat@acme.test", "role": "viewer"});
    for round in 1..=3 {
        let (status, body) = app
            .post("/v1/tenants/acme/members", &app.admin, again.clone())
            .await;
        assert_eq!(status, 409, "round {round}: {body}");
    }
    let (status, _) = app
        .delete(&format!("/v1/tenants/acme/members/{principal}"), &app.admin)
        .await;
    assert_eq!(status, 204);
    // The joining above mailed once; two offers are left for today, then the limit holds.
    for round in 1..=2 {
        let (status, body) = app
            .post("/v1/tenants/acme/members", &app.admin, again.clone())
            .await;
        assert_eq!(status, 201, "offer {round}: {body}");
    }
    let (status, body) = app
        .post("/v1/tenants/acme/members", &app.admin, again)
        .await;
    assert_eq!(status, 429, "{body}");
}

async fn listed(app: &TestApp, id: &serde_json::Value) -> serde_json::Value {
    let (status, page) = app
        .get("/v1/tenants/acme/members?limit=200", &app.admin)
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|m| m["principal_id"] == *id).cloned())
        .expect("the added member is listed")
}

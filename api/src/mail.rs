//! Mail: the invitation mails, and the relay that sends the mail outbox over SMTP (lettre,
//! rustls) or, with `BULKHEAD_MAIL=log`, writes each mail to the log instead.
//!
//! An invitation's one-time token goes only into the mail (written to the outbox in the same
//! transaction as the invitation), never into an API response: whoever can read the mailbox
//! owns the address, not whoever sent the invitation.

use bulkhead_core::config::MailDelivery;
use bulkhead_core::db::PgPool;
use bulkhead_core::store::{self, StoreError, mail::OutboxMail};
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the relay looks for due mail when nobody wakes it.
const POLL: Duration = Duration::from_millis(500);

/// Subject and body of an invitation.
pub fn invitation(
    inviter: &str,
    what: &str,
    token: &str,
    expires_at: DateTime<Utc>,
) -> (String, String) {
    let subject = format!("Your invitation to {what} on Bulkhead");
    let body = format!(
        "Hello,\n\n\
         {inviter} invited you to {what} on Bulkhead.\n\n\
         To accept, choose a password of at least 12 characters and send it with this one-time \
         token before {expires}:\n\n\
         \x20 POST /v1/auth/accept-invitation\n\
         \x20 {{\"token\": \"{token}\", \"password\": \"<your password>\"}}\n\n\
         If you did not expect this mail, ignore it: nothing happens without the token.\n",
        expires = expires_at.format("%Y-%m-%d %H:%M UTC"),
    );
    (subject, body)
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Log,
}

/// Sends the mail outbox until the process ends: due rows (a batch at a time, skipping rows
/// another relay holds), each retried with backoff until it is delivered or given up.
pub async fn run_relay(pool: PgPool, delivery: MailDelivery, from: String, wake: Arc<Notify>) {
    let transport = match &delivery {
        MailDelivery::Smtp { url } => match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
            Ok(builder) => Transport::Smtp(builder.timeout(Some(Duration::from_secs(20))).build()),
            Err(error) => {
                tracing::error!(%error, "BULKHEAD_SMTP_URL is not usable; no mail will be sent");
                return;
            }
        },
        MailDelivery::Log => Transport::Log,
    };
    loop {
        let taken = {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = pool.get()?;
                // One at a time: each is held for a minute, well over one send's timeout, so
                // another replica never takes a mail still being sent.
                store::mail::take_due(&mut conn, 1)
            })
            .await
        };
        let mails = match taken {
            Ok(Ok(mails)) => mails,
            Ok(Err(error)) => {
                tracing::warn!(%error, "mail relay: control database unavailable");
                Vec::new()
            }
            Err(error) => {
                tracing::error!(%error, "mail relay task failed");
                Vec::new()
            }
        };
        let busy = !mails.is_empty();
        for mail in mails {
            let result = send(&transport, &from, &mail).await;
            let id = mail.id;
            let attempts = mail.attempts;
            let pool = pool.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                let mut conn = pool.get()?;
                match result {
                    Ok(()) => store::mail::mark_sent(&mut conn, id),
                    Err(error) => {
                        // 2 s, doubling, at most an hour: 30 attempts span about a day.
                        let retry_in = Duration::from_secs(
                            2u64.saturating_pow(attempts.clamp(1, 12) as u32).min(3600),
                        );
                        tracing::warn!(mail_id = %id, attempts, %error, "mail not sent; will retry");
                        store::mail::mark_failed(&mut conn, id, &error, retry_in)
                    }
                }
            })
            .await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::warn!(mail_id = %id, "could not record a mail's outcome; it is sent again after its hold");
            }
        }
        if !busy {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = wake.notified() => {}
            }
        }
    }
}

async fn send(transport: &Transport, from: &str, mail: &OutboxMail) -> Result<(), String> {
    match transport {
        Transport::Log => {
            tracing::warn!(
                to = %mail.recipient,
                subject = %mail.subject,
                "MAIL NOT DELIVERED (BULKHEAD_MAIL=log, development only): to {} — {}\n{}",
                mail.recipient,
                mail.subject,
                mail.body
            );
            Ok(())
        }
        Transport::Smtp(smtp) => {
            let message = Message::builder()
                .from(
                    from.parse()
                        .map_err(|e| format!("BULKHEAD_MAIL_FROM {from:?}: {e}"))?,
                )
                .to(mail
                    .recipient
                    .parse()
                    .map_err(|e| format!("recipient {:?}: {e}", mail.recipient))?)
                .subject(mail.subject.clone())
                .header(ContentType::TEXT_PLAIN)
                .body(mail.body.clone())
                .map_err(|e| e.to_string())?;
            smtp.send(message)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }
}

/// Queues the mail telling an existing account that a membership waits for it to accept
/// (`signed_up`: it has a password; otherwise it still has to accept its earlier invitation,
/// which accepts this offer too).
pub fn enqueue_membership_offer(
    conn: &mut diesel::PgConnection,
    recipient: &str,
    inviter: &str,
    what: &str,
    tenant_id: uuid::Uuid,
    expires_at: DateTime<Utc>,
    signed_up: bool,
) -> Result<(), StoreError> {
    let subject = format!("Your invitation to {what} on Bulkhead");
    let expires = expires_at.format("%Y-%m-%d %H:%M UTC");
    let how = if signed_up {
        format!(
            "Sign in with your account and accept it before {expires} (it grants nothing until \
             you do):\n\n\
             \x20 GET  /v1/me/invitations\n\
             \x20 POST /v1/me/invitations/{tenant_id}/accept   (or /decline)\n"
        )
    } else {
        format!(
            "Your account is not set up yet: accepting the invitation mailed to you earlier \
             (POST /v1/auth/accept-invitation) accepts this one too, if you do so before \
             {expires}. If that invitation has lapsed, ask your platform administrator to \
             invite you again.\n"
        )
    };
    let body = format!(
        "Hello,\n\n\
         {inviter} invited you to {what} on Bulkhead.\n\n\
         {how}\n\
         If you did not expect this mail, decline it or ignore it.\n"
    );
    store::mail::enqueue(
        conn,
        store::mail::MailKind::MembershipOffer,
        recipient,
        &subject,
        &body,
    )
    .map(|_| ())
}

/// Queues an invitation mail in the caller's transaction.
pub fn enqueue_invitation(
    conn: &mut diesel::PgConnection,
    kind: store::mail::MailKind,
    recipient: &str,
    inviter: &str,
    what: &str,
    token: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (subject, body) = invitation(inviter, what, token, expires_at);
    store::mail::enqueue(conn, kind, recipient, &subject, &body).map(|_| ())
}

//! A small SMTP sink the tests start in-process: the API mails invitations to it over real
//! SMTP, and a test reads the one-time token from the mail, as the invited person would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Mail {
    pub recipients: Vec<String>,
    /// Headers and body, dot-stuffing and quoted-printable soft breaks undone.
    pub text: String,
}

#[derive(Clone, Default)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp sink");
        let port = listener.local_addr().expect("sink addr").port();
        let sink = SmtpSink {
            port,
            mails: Arc::default(),
        };
        let mails = sink.mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mails = mails.clone();
                tokio::spawn(async move {
                    let _ = session(stream, mails).await;
                });
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far for `recipient`.
    pub fn mails_to(&self, recipient: &str) -> Vec<Mail> {
        self.mails
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|mail| {
                        mail.recipients
                            .iter()
                            .any(|r| r.eq_ignore_ascii_case(recipient))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first mail to `recipient` beyond the first `seen`, waiting for it up to 15 s.
    #[allow(dead_code)] // the benches read tokens only
    pub async fn mail_after(&self, recipient: &str, seen: usize) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(mail) = self.mails_to(recipient).into_iter().nth(seen) {
                return mail;
            }
            assert!(
                Instant::now() < deadline,
                "no mail #{} to {recipient} within 15 s",
                seen + 1
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The invitation token of the newest mail to `recipient`, waiting for it up to 15 s.
    #[allow(dead_code)] // not every suite reads tokens itself
    pub async fn invitation_token(&self, recipient: &str) -> String {
        self.invitation_token_after(recipient, 0).await
    }

    /// Like [`invitation_token`](Self::invitation_token), from a mail beyond the first `seen`.
    #[allow(dead_code)] // not every suite reads tokens itself
    pub async fn invitation_token_after(&self, recipient: &str, seen: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mails = self.mails_to(recipient);
            if mails.len() > seen
                && let Some(token) = mails.last().and_then(|m| token_in(&m.text))
            {
                return token;
            }
            assert!(
                Instant::now() < deadline,
                "no invitation mail to {recipient} within 15 s (got {} mails)",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The `bki_…` token in a mail's text.
pub fn token_in(text: &str) -> Option<String> {
    let start = text.find("bki_")?;
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (token.len() > 10).then_some(token)
}

async fn session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 bulkhead-test-sink ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            write
                .write_all(b"250-bulkhead-test-sink\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with("HELO")
            || upper.starts_with("MAIL FROM")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            if upper.starts_with("RSET") {
                recipients.clear();
            }
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO") {
            let address = line
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(address, _)| address.to_owned())
                .unwrap_or_default();
            recipients.push(address);
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut text = String::new();
            while let Some(data) = lines.next_line().await? {
                if data == "." {
                    break;
                }
                let data = data.strip_prefix('.').unwrap_or(&data);
                match data.strip_suffix('=') {
                    // A quoted-printable soft line break: the line goes on.
                    Some(joined) => text.push_str(joined),
                    None => {
                        text.push_str(data);
                        text.push('\n');
                    }
                }
            }
            let text = text.replace("=3D", "=");
            if let Ok(mut all) = mails.lock() {
                all.push(Mail {
                    recipients: std::mem::take(&mut recipients),
                    text,
                });
            }
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}

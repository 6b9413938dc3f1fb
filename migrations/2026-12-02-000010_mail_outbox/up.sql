-- Mail waiting to be sent (invitations), retried until delivered; once sent, the row stays as
-- the record of what was sent, with any one-time token removed from its body.
CREATE TABLE mail_outbox (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    send_after timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    sent_at timestamptz,
    failed_at timestamptz
);
CREATE INDEX mail_outbox_due ON mail_outbox (send_after) WHERE sent_at IS NULL AND failed_at IS NULL;

-- Invitation tokens issued before they were mailed were returned to whoever invited: they end
-- now, and the invited person asks for a new one (sent by mail only).
UPDATE principals SET invitation_expires_at = least(invitation_expires_at, now())
 WHERE password_hash IS NULL AND invitation_token_hash IS NOT NULL;

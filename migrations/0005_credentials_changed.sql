-- When a client's or an app's token last stopped being valid: set by revoke
-- and rotate, whichever process does it (the server's HTTP API or the admin
-- CLI). A running server polls for changes since it last looked and closes
-- the sockets and streams that were opened with the old token, so a
-- revocation through the CLI reaches live connections within
-- [auth] cache_ttl_secs.
ALTER TABLE clients ADD COLUMN credentials_changed_at INTEGER;
ALTER TABLE apps ADD COLUMN credentials_changed_at INTEGER;

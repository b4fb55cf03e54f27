-- When a delivery's current lease began (as SQLite's 0011): renewals move
-- its end, but never past [delivery] max_lease_secs from this moment.
-- Set by every claim (relay_claim in 0003 and the general claim).
ALTER TABLE deliveries ADD COLUMN leased_at BIGINT;

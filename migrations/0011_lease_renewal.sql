-- When a delivery's current lease began: renewals (an agent still working
-- on the conversation) move its end, but never past [delivery]
-- max_lease_secs from this moment.
ALTER TABLE deliveries ADD COLUMN leased_at INTEGER;

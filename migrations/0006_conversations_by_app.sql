-- GET /conversations?appId= lists an app's conversations newest first: with
-- only (app_id, user_id, seq) SQLite read every conversation of the app and
-- sorted them; this index walks them in order and stops at the page size.
CREATE INDEX conversations_by_app ON conversations (app_id, seq);

-- A user may hold several active conversations (a "new conversation" beside
-- the others): the one-active-conversation index becomes a plain one, ordered
-- for "the user's most recently active".
DROP INDEX conversations_active_user;
CREATE INDEX conversations_active_user ON conversations (app_id, user_id, updated_at)
    WHERE expired_at IS NULL;

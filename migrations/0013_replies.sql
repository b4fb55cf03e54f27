-- The inbound message a reply answers: the delivery its send acked (a send
-- with `ack: false`, or one sent when nothing was claimed, answers nothing).
-- The OpenAI-compatible endpoint waits on it for "the reply to this
-- message", and finds which conversation a front end continues by the text
-- of the last reply it shows (see src/relay/completions.rs): the second
-- index is on the reply's first 64 characters (white space trimmed), beside its app and
-- user; the full text is compared on the rows it finds.
ALTER TABLE messages ADD COLUMN in_reply_to INTEGER;
CREATE INDEX messages_in_reply_to ON messages (in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE INDEX messages_answers_by_text ON messages (app_id, recipient, substr(trim(text, char(32, 9, 10, 13)), 1, 64))
    WHERE in_reply_to IS NOT NULL;

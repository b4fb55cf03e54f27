-- The OpenAI-compatible door finds the conversation a front end continues
-- by its latest answer, read through the user's active conversations (see
-- `answered_with` in src/store/messages.rs). The index on the text of every
-- reply, which every reply wrote into at a place of its own (about 7 % of
-- the relay's CPU per round trip at 4 x 64), goes.
DROP INDEX messages_answers_by_text;

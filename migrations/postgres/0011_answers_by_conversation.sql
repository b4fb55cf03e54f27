-- As SQLite's 0018: the conversation a front end of the OpenAI-compatible
-- door continues is found through the user's active conversations and
-- their latest answers, so no index on the text of every reply.
DROP INDEX messages_answers_by_text;

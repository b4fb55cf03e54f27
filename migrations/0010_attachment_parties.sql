-- Who is party to an attachment, in one place for every access check (a
-- message naming it, a download): its uploader (an app, one user of an app,
-- or an agent), and the app, user and agent of each conversation with a
-- message that carries it. A reader matches a row by its app (and, for a
-- user session, its user) or by its client.
CREATE VIEW attachment_parties (attachment_id, app_id, user_id, client_id) AS
    SELECT id, app_id, user_id, client_id FROM attachments
    UNION ALL
    SELECT ma.attachment_id, c.app_id, c.user_id, c.client_id
    FROM message_attachments ma
    JOIN messages m ON m.seq = ma.message_seq
    JOIN conversations c ON c.id = m.conversation_id;

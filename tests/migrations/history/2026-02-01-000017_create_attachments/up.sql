CREATE TABLE attachments (
    id BIGSERIAL PRIMARY KEY,
    comment_id BIGINT NOT NULL REFERENCES comments (id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL CHECK (bytes >= 0)
);
CREATE INDEX attachments_comment_id_idx ON attachments (comment_id);

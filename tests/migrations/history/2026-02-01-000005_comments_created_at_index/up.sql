CREATE INDEX comments_created_at_idx ON comments (created_at);

DROP INDEX comments_created_at_idx;

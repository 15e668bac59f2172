-- Sign-in by password: an argon2 hash (PHC string) per user. Rows from before have no usable
-- hash ('!') and cannot sign in until a password is set.
ALTER TABLE users ADD COLUMN password_hash TEXT NOT NULL DEFAULT '!';
ALTER TABLE users ALTER COLUMN password_hash DROP DEFAULT;

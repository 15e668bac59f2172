DROP INDEX accounts_email_lower_idx;
CREATE UNIQUE INDEX accounts_email_idx ON accounts (email);

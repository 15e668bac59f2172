ALTER TABLE labels ADD COLUMN color VARCHAR(7) NOT NULL DEFAULT '#888888';
ALTER TABLE labels ADD CONSTRAINT labels_color_check CHECK (color ~ '^#[0-9a-f]{6}$');

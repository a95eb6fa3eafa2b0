-- How many times an operation was exported and then shown by the target import as not taken
-- (still differing after the settle window, or never confirmed). Kept apart from `attempts`, which
-- also counts failed requests (a member add refused while Graph replicates the member): only
-- this count decides "Graph normalises or ignores the value" and quarantines the operation.
ALTER TABLE pending_export ADD COLUMN IF NOT EXISTS unequal_exports int NOT NULL DEFAULT 0;

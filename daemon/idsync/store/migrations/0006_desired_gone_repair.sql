-- Version 5 was shipped once as 0005_journal_creates (an index on recent creates) and then
-- replaced by 0005_desired_gone under the same number, so a schema that applied the first one
-- never got desired_gone. This creates what is missing and drops the index nothing reads any more.
-- Idempotent: a schema that applied 0005_desired_gone is left as it is.
CREATE TABLE IF NOT EXISTS desired_gone (
    anchor        text PRIMARY KEY,
    object_type   text NOT NULL,
    target_anchor text NOT NULL,
    removed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS desired_gone_target ON desired_gone (object_type, target_anchor);
DROP INDEX IF EXISTS export_journal_recent_creates;

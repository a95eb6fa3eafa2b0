-- idsync instance schema, version 3: the export order as an indexed column, so that claiming a
-- batch walks an index instead of sorting the whole queue (300,000 rows after a first sync).
-- Users before groups, creates before updates before members before deletes.
ALTER TABLE pending_export ADD COLUMN priority smallint GENERATED ALWAYS AS (
    CASE kind WHEN 'create' THEN 0 WHEN 'update' THEN 2 WHEN 'member_add' THEN 4
              WHEN 'member_remove' THEN 6 ELSE 8 END
    + CASE object_type WHEN 'user' THEN 0 ELSE 1 END
) STORED;
CREATE INDEX pending_export_claim ON pending_export (priority, id)
    WHERE exported_at IS NULL AND quarantined_at IS NULL;

-- idsync instance schema, version 11: writeback to on-premises AD through the same queue.
-- `target` says where an operation is written: 'graph' (Entra ID, every operation before this
-- version) or 'ad' (the writeback exporter, over LDAP). Writeback rows carry anchors of their own
-- ('ad:Group_<cloud id>', 'ad:guid:<source anchor>'), so they never meet a Graph row's key.
ALTER TABLE pending_export ADD COLUMN IF NOT EXISTS target text NOT NULL DEFAULT 'graph'
    CHECK (target IN ('graph', 'ad'));
-- The journal's target follows from the anchor (writeback anchors start with 'ad:').
ALTER TABLE export_journal ADD COLUMN IF NOT EXISTS target text GENERATED ALWAYS AS (
    CASE WHEN anchor LIKE 'ad:%' THEN 'ad' ELSE 'graph' END
) STORED;
CREATE INDEX IF NOT EXISTS pending_export_ad ON pending_export (priority, id)
    WHERE target = 'ad' AND exported_at IS NULL AND quarantined_at IS NULL;

-- idsync instance schema, version 8: the user's manager as a reference flow.
-- Written to run again on a current store (a repair re-applies migrations from 0006 on).

-- Desired: the reference the rules gave (a DN) and the source anchor it resolved to. NULL anchor =
-- no manager (the DN names no object in scope, or not resolved yet); the user's manager is cleared.
CREATE TABLE IF NOT EXISTS desired_manager (
    anchor         text PRIMARY KEY REFERENCES desired_object (anchor) ON DELETE CASCADE,
    manager_ref    text NOT NULL,
    manager_anchor text
);
CREATE INDEX IF NOT EXISTS desired_manager_ref ON desired_manager (lower(manager_ref));
CREATE INDEX IF NOT EXISTS desired_manager_anchor ON desired_manager (manager_anchor);

-- Target: each user's manager as the user delta reports it (`manager@delta`).
CREATE TABLE IF NOT EXISTS target_manager (
    user_id    text PRIMARY KEY,
    manager_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS target_manager_manager ON target_manager (manager_id);

-- The queue's new kinds: PUT and DELETE /users/{id}/manager/$ref.
ALTER TABLE pending_export DROP CONSTRAINT IF EXISTS pending_export_kind_check;
ALTER TABLE pending_export ADD CONSTRAINT pending_export_kind_check CHECK (kind IN
    ('create', 'update', 'delete', 'member_add', 'member_remove', 'manager_set', 'manager_remove'));

-- Manager operations are reference operations like member ones: the same place in the export
-- order (0003's priority) and so the same fair-sharing lane, not the deletes' (ELSE 8).
ALTER TABLE pending_export DROP COLUMN IF EXISTS priority;
ALTER TABLE pending_export ADD COLUMN priority smallint GENERATED ALWAYS AS (
    CASE kind WHEN 'create' THEN 0 WHEN 'update' THEN 2 WHEN 'member_add' THEN 4 WHEN 'manager_set' THEN 4
              WHEN 'member_remove' THEN 6 WHEN 'manager_remove' THEN 6 ELSE 8 END
    + CASE object_type WHEN 'user' THEN 0 ELSE 1 END
) STORED;
CREATE INDEX IF NOT EXISTS pending_export_claim ON pending_export (priority, id)
    WHERE exported_at IS NULL AND quarantined_at IS NULL;

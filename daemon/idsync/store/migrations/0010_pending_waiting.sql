-- idsync instance schema, version 10: operations known to wait for a link are left out of the
-- claim's index. A member or manager operation needs the target ids of both its objects; while
-- one has no link yet (its create is exported but not confirmed), claiming walked past it on
-- every batch — with 2,000,000 member adds waiting on 1,000,000 creates, ~10 s per claim.
-- `waiting` is set when the diff writes such an operation and cleared by the sync that links the
-- missing object (store.pending.release_waiting); the claim still checks the links, so the flag
-- only ever hides an operation that cannot run yet.
ALTER TABLE pending_export ADD COLUMN IF NOT EXISTS waiting boolean NOT NULL DEFAULT false;
UPDATE pending_export p SET waiting = true
 WHERE p.target = 'graph'
   AND ((p.kind IN ('member_add', 'member_remove', 'manager_set', 'manager_remove')
         AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = p.anchor))
     OR (p.kind IN ('member_add', 'member_remove', 'manager_set')
         AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = p.member_anchor)));
CREATE INDEX IF NOT EXISTS pending_export_claim_ready ON pending_export (priority, id)
    WHERE exported_at IS NULL AND quarantined_at IS NULL AND NOT waiting;
-- The claim reads only the index above. Its predecessor (0003/0008) and `pending_export_ready`
-- (0001: not read by any statement since the claim ordered by priority) cost an index insert per
-- operation — 3,000,000 each in a first sync of 1,000,000 users.
DROP INDEX IF EXISTS pending_export_claim;
DROP INDEX IF EXISTS pending_export_ready;
-- desired_member: its rows go with their group in the statements that remove desired objects
-- (store.desired); the foreign key that did it checked 2,000,000 rows one by one in a first sync
-- (11 s of it), and the member index was read by no statement.
ALTER TABLE desired_member DROP CONSTRAINT IF EXISTS desired_member_group_anchor_fkey;
DROP INDEX IF EXISTS desired_member_member;
-- Entra Connect's objects (onPremisesSyncEnabled), which the diff looks up for every desired
-- object it would create (store.diff._entra_connect_twins): found through this index, not by
-- scanning every target object.
CREATE INDEX IF NOT EXISTS target_object_connect ON target_object (object_type)
    WHERE attrs -> 'onPremisesSyncEnabled' = 'true'::jsonb;

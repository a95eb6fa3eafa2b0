-- idsync instance schema, version 2: what the sync engine needs beyond the core tables.

-- The value the rules give the anchor attribute (onPremisesImmutableId for users, a directory
-- extension for groups): a target object carrying this value is the desired object's twin.
ALTER TABLE desired_object ADD COLUMN target_anchor text NOT NULL DEFAULT '';
CREATE INDEX desired_object_target_anchor ON desired_object (object_type, target_anchor);

-- The join: which target object stands for which source anchor. Only linked objects are ever
-- updated, deprovisioned or counted as members; a target object idsync never linked (created,
-- hard-matched or soft-matched) is not idsync's and is never deleted.
CREATE TABLE sync_link (
    anchor       text PRIMARY KEY,
    object_type  text NOT NULL CHECK (object_type IN ('user', 'group')),
    target_id    text NOT NULL UNIQUE,
    how          text NOT NULL CHECK (how IN ('created', 'hard', 'soft')),
    linked_at    timestamptz NOT NULL DEFAULT now()
);

-- An operation that failed too often is set aside (quarantined) and never blocks the others.
ALTER TABLE pending_export ADD COLUMN quarantined_at timestamptz;
CREATE INDEX pending_export_anchor ON pending_export (anchor);
CREATE INDEX pending_export_kind ON pending_export (kind) WHERE kind = 'delete';

-- Delete sets the deletion guard held, by fingerprint: an approval of a fingerprint releases
-- that set and any subset of it (deletes already done), never a larger or different set.
CREATE TABLE deletion_hold (
    fingerprint  text PRIMARY KEY,
    keys         text[] NOT NULL,             -- 'object_type:anchor', sorted
    deletes      integer NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now()
);

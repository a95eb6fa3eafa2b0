-- idsync instance schema, version 1. Runs with search_path set to the instance's schema.
-- Every change to an object's row takes a new value of change_seq, so "what changed since the
-- last sync" is an indexed range scan (changed_seq > watermark), for source and target alike.

CREATE SEQUENCE change_seq;

-- Source space: the directory as imported, keyed by the immutable anchor (objectGUID/entryUUID).
CREATE TABLE source_object (
    anchor       text PRIMARY KEY,
    object_type  text NOT NULL CHECK (object_type IN ('user', 'group')),
    dn           text NOT NULL,
    attrs        jsonb NOT NULL,              -- lower-case name -> array of normalized strings
    attrs_hash   bytea NOT NULL,              -- of attrs, to skip unchanged rows cheaply
    deleted      boolean NOT NULL DEFAULT false,
    seen_run     bigint,                      -- last full import that saw it (mark and sweep)
    changed_seq  bigint NOT NULL DEFAULT nextval('change_seq'),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_object_changed ON source_object (changed_seq);
CREATE INDEX source_object_dn ON source_object (lower(dn));
CREATE INDEX source_object_type_live ON source_object (object_type) WHERE NOT deleted;

-- Group membership in the source: member_ref is the member's anchor where the directory gave it
-- (extended DN), else 'dn:<dn>' until it can be resolved.
CREATE TABLE source_member (
    group_anchor text NOT NULL REFERENCES source_object (anchor) ON DELETE CASCADE,
    member_ref   text NOT NULL,
    PRIMARY KEY (group_anchor, member_ref)
);
CREATE INDEX source_member_ref ON source_member (member_ref);

-- Target space: Entra ID as imported through Graph delta, keyed by Graph object id.
CREATE TABLE target_object (
    id           text PRIMARY KEY,
    object_type  text NOT NULL CHECK (object_type IN ('user', 'group')),
    anchor       text,                        -- idsync's source anchor on the object; NULL = not ours
    attrs        jsonb NOT NULL,
    deleted      boolean NOT NULL DEFAULT false,
    changed_seq  bigint NOT NULL DEFAULT nextval('change_seq'),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX target_object_anchor ON target_object (object_type, anchor) WHERE anchor IS NOT NULL;
CREATE INDEX target_object_changed ON target_object (changed_seq);

CREATE TABLE target_member (
    group_id     text NOT NULL,
    member_id    text NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX target_member_member ON target_member (member_id);

-- Desired state: what the rules say the target should hold, keyed by source anchor.
CREATE TABLE desired_object (
    anchor       text PRIMARY KEY,
    object_type  text NOT NULL CHECK (object_type IN ('user', 'group')),
    attrs        jsonb NOT NULL,              -- target attribute name -> value
    rules_hash   text NOT NULL,
    changed_seq  bigint NOT NULL DEFAULT nextval('change_seq'),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX desired_object_changed ON desired_object (changed_seq);

CREATE TABLE desired_member (
    group_anchor  text NOT NULL REFERENCES desired_object (anchor) ON DELETE CASCADE,
    member_anchor text NOT NULL,
    PRIMARY KEY (group_anchor, member_anchor)
);
CREATE INDEX desired_member_member ON desired_member (member_anchor);

-- Pending exports: one operation per object and kind (and member, for member operations); a
-- newer computation replaces an older one. A row leaves when the target import confirms it.
CREATE TABLE pending_export (
    id            bigserial PRIMARY KEY,
    object_type   text NOT NULL CHECK (object_type IN ('user', 'group')),
    anchor        text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'member_add', 'member_remove')),
    member_anchor text NOT NULL DEFAULT '',
    target_id     text,
    payload       jsonb NOT NULL DEFAULT '{}',
    computed_at   timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    not_before    timestamptz,
    last_error    text,
    claimed_epoch bigint,
    claimed_by    text,
    claimed_at    timestamptz,
    exported_at   timestamptz,
    UNIQUE (object_type, anchor, kind, member_anchor)
);
CREATE INDEX pending_export_ready ON pending_export (id) WHERE exported_at IS NULL;

-- Export journal: every export attempt, with the epoch and node that made it.
CREATE TABLE export_journal (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    epoch         bigint NOT NULL,
    node          text NOT NULL,
    object_type   text NOT NULL,
    anchor        text NOT NULL,
    kind          text NOT NULL,
    member_anchor text NOT NULL DEFAULT '',
    target_id     text,
    request_id    text,
    http_status   integer,
    outcome       text NOT NULL,             -- ok | adopted | retry | error
    error         text
);
CREATE INDEX export_journal_at ON export_journal (at);

-- Watermarks: DirSync cookie (with the DC that issued it), syncrepl cookie, Graph delta links,
-- and the sync engine's change_seq positions. Written in the same transaction as the data.
CREATE TABLE watermark (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    server      text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Run history: one row per import, sync or export run.
CREATE TABLE run_history (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,                -- e.g. source.full, source.delta, target.delta, sync, export
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    added       integer NOT NULL DEFAULT 0,
    updated     integer NOT NULL DEFAULT 0,
    deleted     integer NOT NULL DEFAULT 0,
    unchanged   integer NOT NULL DEFAULT 0,
    errors      integer NOT NULL DEFAULT 0,
    watermark   text,
    detail      jsonb NOT NULL DEFAULT '{}',
    error       text
);
CREATE INDEX run_history_kind ON run_history (kind, id DESC);

-- Quarantine: objects that could not be imported, synced or exported, with the reason.
CREATE TABLE quarantine (
    phase       text NOT NULL,                -- import | sync | export
    key         text NOT NULL,                -- anchor, or DN when there is no anchor
    object_type text,
    dn          text,
    reason      text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (phase, key)
);

-- Settings of this instance that must survive restarts (e.g. the rules hash of the last full sync).
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Fencing: the leadership this instance holds, as the HA layer last confirmed it with ZooKeeper.
-- Every export batch is claimed in a transaction that checks this row (epoch and lease, on the
-- database's clock), so a paused or partitioned old leader cannot claim work after its lease ran out.
CREATE TABLE fence (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       bigint NOT NULL,
    node        text NOT NULL,
    lease_until timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

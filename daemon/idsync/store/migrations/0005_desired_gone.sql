-- Objects that left the desired state recently, with the target anchor they carried. An object
-- that leaves scope before the target import has shown it (just created, or created by another
-- node before a failover) has no link yet; this is how any node still recognises and
-- deprovisions it.
CREATE TABLE desired_gone (
    anchor        text PRIMARY KEY,
    object_type   text NOT NULL,
    target_anchor text NOT NULL,
    removed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX desired_gone_target ON desired_gone (object_type, target_anchor);

-- idsync instance schema, version 4: exported operations awaiting their confirming import are
-- few, but re-arming the stale ones scanned the whole queue every cycle.
CREATE INDEX pending_export_exported ON pending_export (exported_at) WHERE exported_at IS NOT NULL;

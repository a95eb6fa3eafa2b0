-- The link step looks for recent creates whose object left scope before the import showed it.
CREATE INDEX export_journal_recent_creates ON export_journal (at) WHERE kind = 'create';

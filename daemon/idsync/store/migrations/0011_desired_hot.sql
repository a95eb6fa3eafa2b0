-- idsync instance schema, version 11: a changed desired object is updated in place (a HOT
-- update: no index entry written) when its page has room. Every change takes a new changed_seq,
-- and the index on it made each update write an entry into every index of desired_object — at
-- 1,000,000 objects 1,000 changed desired objects cost ~110 ms, most of it reading index pages
-- from disk. No statement reads desired_object by changed_seq (the delta sync finds changes in
-- the source and target spaces); the page room is what fillfactor 90 leaves on new pages.
DROP INDEX IF EXISTS desired_object_changed;
ALTER TABLE desired_object SET (fillfactor = 90);

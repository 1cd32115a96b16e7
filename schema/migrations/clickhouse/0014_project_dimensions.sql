-- The custom dimensions each project declares (issue 19): only these keys of an event's
-- `dimensions` are stored, the collector drops the others before acknowledging. One row
-- per project holding the whole list, so setting a list replaces it in one write and
-- readers never see half of a change. A new table rather than a column on projects:
-- ALTER ... ON CLUSTER is broken on 18.16, and cluster mode replicates this table to
-- every node as it does the rest of the control plane. An empty list is a row too (it
-- declares none), so a cleared list does not come back from an older version.
CREATE TABLE IF NOT EXISTS {db}.project_dimensions (
    project String,
    dimension_keys Array(String),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY project

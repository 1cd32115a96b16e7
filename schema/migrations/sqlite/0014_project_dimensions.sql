-- The custom dimensions each project declares (issue 19): only these keys of an event's
-- `dimensions` are stored, the collector drops the others before acknowledging. One row
-- per project with the whole list, so setting a list replaces it in one write. No
-- foreign key to projects: ClickHouse has none, and both stores must answer the same.
CREATE TABLE IF NOT EXISTS project_dimensions (
    project TEXT PRIMARY KEY,
    dimension_keys TEXT NOT NULL -- JSON array of keys, sorted
) WITHOUT ROWID

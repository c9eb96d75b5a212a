// The metadata schema. Each entry upgrades user_version by one; they run in
// one transaction at open, so a crash mid-upgrade leaves the old schema.
export const migrations: string[] = [
  `
  CREATE TABLE snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT, -- directory name; AUTOINCREMENT never reuses ids
    key        TEXT    NOT NULL UNIQUE,           -- active/view key, or committed name
    parent_id  INTEGER REFERENCES snapshots(id),
    kind       INTEGER NOT NULL,                  -- Kind wire value
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,        -- usage frozen at commit
    inodes     INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX snapshots_parent ON snapshots(parent_id);
  CREATE TABLE labels (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    PRIMARY KEY (snapshot_id, name)
  ) WITHOUT ROWID;
  `,
  `
  -- Images mounted through EROFS over fscache. The fscache worker resolves the
  -- kernel's (volume, cookie) against this table, so a restarted worker needs
  -- nothing but this file and the OPEN messages.
  CREATE TABLE fscache_images (
    fsid       TEXT PRIMARY KEY,
    domain     TEXT NOT NULL DEFAULT '',  -- shared domain_id, '' for a private volume
    bootstrap  TEXT NOT NULL,             -- the bootstrap (or plain EROFS image) file
    blobs_dir  TEXT NOT NULL DEFAULT '',  -- local blobs, named by blob id or device tag
    mountpoint TEXT,                      -- where it is mounted, once it is
    created_us INTEGER NOT NULL
  );
  CREATE INDEX fscache_images_domain ON fscache_images(domain);
  `,
  `
  -- Where a lazily mounted image's blobs live in a registry (its
  -- cri.image-ref), and the bootstrap snapshot it belongs to, if any.
  ALTER TABLE fscache_images ADD COLUMN image_ref TEXT NOT NULL DEFAULT '';
  ALTER TABLE fscache_images ADD COLUMN snapshot_id INTEGER;
  `,
  `
  -- Learned prefetch: what a container's start read of an image, in
  -- first-access order, keyed by the sha256 of the image's bootstrap (the
  -- same image under any name). entries: JSON [[blob id, uOffset, uSize, path], ...].
  CREATE TABLE traces (
    key         TEXT PRIMARY KEY,
    image_ref   TEXT NOT NULL,
    recorded_us INTEGER NOT NULL,
    window_ms   INTEGER NOT NULL,
    reads       INTEGER NOT NULL,  -- journal lines, re-sent READs included
    entries     TEXT NOT NULL
  );
  `,
];
